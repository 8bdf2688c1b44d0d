"""The web page end to end in headless Chromium: catalog -> product -> similar item ->
a shopper's feed -> search by photo, asserting on what a person sees."""

from __future__ import annotations

import os
import re
import shutil
import threading

import pytest
from PIL import Image
from werkzeug.serving import make_server

from recsys.settings import Settings
from services.app import create_app
from tests.shop_fixture import build_shop, item_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if not CHROMIUM:
    if os.environ.get("RECSYS_REQUIRE_BROWSER"):
        pytest.fail("RECSYS_REQUIRE_BROWSER is set but chromium is not installed")
    pytest.skip("chromium not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return build_shop(tmp_path_factory.mktemp("web-shop"))


def serve(shop, **settings):
    """The service on a free port in a thread -> (base URL, server)."""
    url, artifacts = shop
    app = create_app(
        Settings(database_url=url, artifacts_dir=artifacts, **settings),
        {"RELOAD_CHECK_SECONDS": 0},
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture(scope="module")
def base_url(shop):
    """The demo's settings: the page holds no key, so listing shoppers is not open to it."""
    base, server = serve(shop)
    yield base
    server.shutdown()


@pytest.fixture(scope="module")
def open_base_url(shop):
    """A server that makes listing shoppers public (RECSYS_PUBLIC_SCOPES with users:read)."""
    base, server = serve(shop, public_scopes="items:read,feeds:read,search:read,users:read")
    yield base
    server.shutdown()


@pytest.fixture(scope="module")
def page(base_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # what the page's Content-Security-Policy refused (a style attribute, an inline script)
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors: {errors}"


def card_ids(page, testid: str) -> list[str]:
    cards = page.locator(f'[data-testid="{testid}"] [data-testid="item-card"]')
    cards.first.wait_for()
    return [cards.nth(n).get_attribute("data-item-id") for n in range(cards.count())]


def test_product_to_similar_item_to_a_feed(page, base_url):
    page.goto(base_url + "/")
    assert page.locator("h1").inner_text() == "Catalog (32 items)"
    page.locator('[data-testid="catalog"] [data-item-id="a1"]').click()
    sync_api.expect(page.get_by_test_id("product-title")).to_have_text("Comedy story 1")
    sync_api.expect(page.get_by_test_id("attributes")).to_contain_text("a-brand")
    similar = card_ids(page, "similar")
    assert len(similar) == 12 and "a1" not in similar
    assert all(item.startswith("a") for item in similar[:5]), similar  # comedies like a comedy
    first = similar[0]
    # why each item is there: the largest parts of its score, under the card
    why = page.locator(f'[data-testid="similar"] [data-item-id="{first}"] [data-testid="because"]')
    sync_api.expect(why).to_contain_text("looks alike")
    sync_api.expect(why).to_contain_text("same brand, genres in common")
    page.locator(f'[data-testid="similar"] [data-item-id="{first}"]').click()
    sync_api.expect(page.get_by_test_id("product-title")).not_to_have_text("Comedy story 1")
    assert page.url.endswith("#/item/" + first)
    assert (
        page.locator('[data-testid="similar"] img').first.evaluate("img => img.naturalWidth") == 28
    )

    sync_api.expect(page.get_by_test_id("users-private")).to_contain_text("API key")
    page.locator("#shopper-id").fill("u9")
    page.locator("#shopper-id").press("Enter")
    sync_api.expect(page.get_by_test_id("feed-title")).to_have_text("For u9")
    feed = card_ids(page, "feed")
    assert len(feed) >= 10 and all(item.startswith("b") for item in feed[:5])
    # a feed item names the shopper's history items it comes from, by title
    why = page.locator(f'[data-testid="feed"] [data-item-id="{feed[0]}"] [data-testid="because"]')
    # (one title after another, " · " between them: titles may hold commas)
    titles = r"Drama story \d+( · Drama story \d+)+"
    sync_api.expect(why).to_have_text(re.compile(rf"^because you viewed {titles}$"))
    assert page.get_by_test_id("fallback").count() == 0


def test_title_search_from_the_header(page, base_url):
    page.goto(base_url + "/")
    page.locator("#search-text").fill("drama")
    page.locator("#search-text").press("Enter")
    sync_api.expect(page.locator("h1")).to_have_text("Items matching “drama” (16)")
    found = card_ids(page, "catalog")
    assert len(found) == 16 and all(item.startswith("b") for item in found)
    page.goto(base_url + "/#/?q=dr")  # too short to look up: the service's reason is shown
    sync_api.expect(page.get_by_test_id("error")).to_contain_text("at least 3 characters")


def test_catalog_pages_next_and_back(page, base_url):
    page.goto(base_url + "/")
    first = card_ids(page, "catalog")
    page.get_by_test_id("next-page").click()
    sync_api.expect(
        page.locator('[data-testid="catalog"] [data-testid="item-card"]')
    ).to_have_count(8)
    second = card_ids(page, "catalog")
    assert len(first) == 24 and not set(first) & set(second)  # 32 items, pages of 24
    assert page.get_by_test_id("next-page").count() == 0
    page.get_by_text("← previous").click()
    sync_api.expect(
        page.locator('[data-testid="catalog"] [data-testid="item-card"]')
    ).to_have_count(24)


def test_unknown_shopper_sees_the_popular_items_notice(page, base_url):
    page.goto(base_url + "/#/user/someone-new")
    sync_api.expect(page.get_by_test_id("fallback")).to_be_visible()
    assert len(card_ids(page, "feed")) > 0


def test_search_by_photo(page, base_url, tmp_path):
    page.goto(base_url + "/")
    photo = tmp_path / "ring.png"
    Image.fromarray(item_image("b", 2)).save(photo)
    sync_api.expect(page.locator("#photo-form")).to_be_visible()  # its bundle has photos
    page.locator("#photo").set_input_files(str(photo))
    found = card_ids(page, "visual")
    assert sum(item.startswith("b") for item in found[:5]) >= 4
    # the results are a view of their own: in the address and the history (they were not:
    # Back skipped them, and the logo did nothing from a search by photo on the home page)
    assert page.url.endswith("#/photo")
    page.go_back()
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items)")
    page.go_forward()
    assert len(card_ids(page, "visual")) == len(found)
    page.reload()  # a photo cannot live in the address: the view asks for one
    sync_api.expect(page.locator("h1")).to_have_text("Search by photo")


# Each word of the product page's attribute names that its lines cut in two ("auth/or").
WORDS_CUT = """() => [
  ...document.querySelectorAll('[data-testid="attributes"] tr > th:first-child')]
  .flatMap((cell) => [...cell.textContent.matchAll(/\\S+/g)].filter((word) => {
    const range = document.createRange();
    range.setStart(cell.firstChild, word.index);
    range.setEnd(cell.firstChild, word.index + word[0].length);
    return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size > 1;
  }).map((word) => word[0]))"""


def test_a_catalog_without_photos_shows_text_cards_and_no_search_by_photo(page, tmp_path_factory):
    """A bookshop without photos: each product page showed a large grey square for the photo
    it lacked, and a "Search by photo" box whose every search failed (its bundle has no
    image model); beside a long blurb, the names broke mid-word ("auth/or", "seri/es")."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from recsys.catalog.models import Item, ItemAttribute

    def prepare(engine) -> None:
        names = {"author": "categorical", "series_volume": "numeric", "blurb": "text"}
        with Session(engine) as session, session.begin():
            session.add_all([ItemAttribute(name=n, kind=k) for n, k in names.items()])
            book = session.scalar(select(Item).where(Item.external_id == "a1"))
            blurb = " ".join(["a winding tale of the sea, its islands and their wizards"] * 30)
            book.attributes = {**book.attributes, "author": "Ursula K. Le Guin",
                               "series_volume": 3, "blurb": blurb}  # fmt: skip

    shop = build_shop(tmp_path_factory.mktemp("bookshop"), prepare=prepare, photos=False)
    base, server = serve(shop)
    try:
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 800})
            page.goto(f"{base}/#/item/a1")
            sync_api.expect(page.get_by_test_id("product-title")).to_have_text("Comedy story 1")
            sync_api.expect(page.get_by_test_id("attributes")).to_contain_text("series volume")
            assert page.locator(".product img, .product .no-photo").count() == 0
            assert page.evaluate(WORDS_CUT) == [], width
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        sync_api.expect(page.get_by_test_id("similar").locator(".no-photo")).to_have_count(0)
        assert page.evaluate("fetch('/readyz').then((r) => r.json())")["image_search"] is False
        sync_api.expect(page.locator("#photo-form")).to_be_hidden()
        page.goto(f"{base}/#/photo")  # an old link to the photo search
        sync_api.expect(page.locator("#view")).to_contain_text("no photos to search by")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})
        server.shutdown()


def test_bad_item_shows_the_api_error(page, base_url):
    page.goto(base_url + "/#/item/no-such-item")
    sync_api.expect(page.get_by_test_id("error")).to_contain_text("no-such-item")


def test_prices_show_the_shops_currency(page, base_url, shop):
    # the default settings name no currency: a price is the number alone
    page.goto(base_url + "/")
    assert page.evaluate("[money(29.9), money('12'), money(null), money('n/a')]") == [
        "29.90", "12.00", "", "n/a",
    ]  # fmt: skip
    base, server = serve(shop, currency="USD")
    try:
        page.goto(base + "/")
        assert page.evaluate("[money(29.9), money(1234.5)]") == ["$29.90", "$1,234.50"]
        # an item's own currency (ISO 4217), else the shop's: a code it cannot be is ignored
        said = page.evaluate("[money(29.9, 'gbp'), money(1234, 'JPY'), money(5, 'pounds')]")
        assert said == ["£29.90", "¥1,234", "$5.00"]
    finally:
        server.shutdown()


def test_an_item_priced_in_its_own_currency_shows_it(page, base_url):
    """A shop selling in several currencies (a `currency` attribute per item) showed every
    price in the one RECSYS_CURRENCY, or as a bare number without one."""

    def in_yen(route):
        answer = route.fetch()
        item = answer.json()
        item["attributes"] |= {"price": 1234, "currency": "JPY"}
        route.fulfill(response=answer, json=item)

    page.route("**/v1/items/a1", in_yen)
    try:
        page.goto(base_url + "/#/item/a1")
        row = page.get_by_test_id("attributes").locator("tr").filter(has_text="price")
        sync_api.expect(row.locator("td")).to_have_text("¥1,234")
    finally:
        page.unroute("**/v1/items/a1")


def test_shoppers_are_listed_where_the_server_makes_the_list_public(page, open_base_url):
    page.goto(open_base_url + "/")
    page.get_by_test_id("user-link").filter(has_text="u9 (").click()
    sync_api.expect(page.get_by_test_id("feed-title")).to_have_text("For u9")
    assert page.get_by_test_id("users-private").count() == 0


def test_a_long_title_without_spaces_keeps_the_page_within_the_window(page, tmp_path_factory):
    """Titles may be 10,000 characters, some with no space to wrap at: the product page and
    every grid that shows the item stay as wide as the window (77,005 px wide before)."""
    from sqlalchemy import update

    from recsys.catalog.models import Item

    def prepare(engine) -> None:
        with engine.begin() as connection:
            statement = update(Item).where(Item.external_id == "a2").values(title="W" * 9000)
            connection.execute(statement)

    base, server = serve(build_shop(tmp_path_factory.mktemp("long-title"), prepare=prepare))
    try:
        page.set_viewport_size({"width": 1280, "height": 800})
        for shown in ("a2", "a1"):  # its own page, and a page whose similar items hold it
            page.goto(f"{base}/#/item/{shown}")
            card_ids(page, "similar")
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    finally:
        server.shutdown()


def test_a_slow_answer_for_an_item_left_behind_never_replaces_the_one_shown(page, base_url):
    """Quick navigation: a1's answers are held back 1.5 s, a2 is opened meanwhile; a1's
    arrived later and replaced a2 under a2's address."""

    def slow_a1(route):
        page.wait_for_timeout(1500)
        route.continue_()

    page.goto(base_url + "/")
    page.route(re.compile(r".*/v1/items/a1(/similar.*)?$"), slow_a1)
    try:
        page.goto(base_url + "/#/item/a1")
        page.wait_for_timeout(100)
        page.goto(base_url + "/#/item/a2")
        sync_api.expect(page.get_by_test_id("product-title")).to_have_text(re.compile("."))
        shown_a2 = page.get_by_test_id("product-title").text_content()
        page.wait_for_timeout(2500)  # a1's answers have come by now
        assert page.get_by_test_id("product-title").text_content() == shown_a2
        assert page.locator("#view").get_attribute("aria-busy") is None
        assert page.get_by_text("item a2", exact=True).count() == 1
    finally:
        page.unroute(re.compile(r".*/v1/items/a1(/similar.*)?$"))


def test_a_malformed_address_or_a_proxys_page_is_said_in_words(page, base_url):
    page.goto(base_url + "/#/item/%E0%A4%A")
    sync_api.expect(page.get_by_test_id("error")).to_contain_text("this address is malformed")
    page.route("**/v1/users/u1/recommendations*",
               lambda route: route.fulfill(status=502, body="<html>Bad gateway</html>",
                                           content_type="text/html"))  # fmt: skip
    try:
        page.goto(base_url + "/#/user/u1")
        sync_api.expect(page.get_by_test_id("error")).to_contain_text("the server answered 502")
    finally:
        page.unroute("**/v1/users/u1/recommendations*")


def test_a_phone_shows_one_column_within_the_screen(page, base_url):
    page.set_viewport_size({"width": 375, "height": 800})
    try:
        for address in ("/", "/#/item/a1"):
            page.goto(base_url + address)
            page.get_by_test_id("item-card").first.wait_for()
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, address
            main_width = page.evaluate("document.querySelector('#view').clientWidth")
            assert main_width >= 300, address  # the items get the screen, not 79 px of it
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_a_screen_reader_hears_the_new_view_by_its_heading_once(page, base_url):
    """The whole view was a live region: each route read out every card of the grid. Then
    a status region said the heading that focus says too (heard twice), as a paragraph in
    the view's reading order."""
    page.goto(base_url + "/")
    page.locator('[data-testid="catalog"] [data-item-id="a1"]').click()
    title = page.get_by_test_id("product-title")
    sync_api.expect(title).to_be_visible()
    assert page.locator("#view").get_attribute("aria-live") is None
    assert page.evaluate("document.activeElement.textContent") == title.text_content()
    sync_api.expect(page.locator("#announce")).to_have_text("")  # focus says it
    assert page.locator("main #announce, #view [aria-live], #view [role=status]").count() == 0
    page.goto(base_url + "/#/item/no-such-item")
    sync_api.expect(page.locator("h1")).to_have_text("Not found")  # what focus says
    sync_api.expect(page.locator("#announce")).to_contain_text("no-such-item")  # and the rest


def test_each_view_is_a_page_of_its_own_and_failures_stay_where_they_happen(page, base_url):
    """A walkthrough's findings: a product opened from far down the catalog showed scrolled
    past its title; every tab and history entry was "recsys shop"; a failing shoppers' list
    replaced the whole view; a missing photo showed a broken image; a server that did not
    answer said "Failed to fetch"; "previous" on a bookmarked page 2 left the site."""
    page.route("**/v1/users?limit=30", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body='{"error": {"status": 503, "code": "busy", "message": "busy"}}'))  # fmt: skip
    page.route("**/images/a3", lambda route: route.fulfill(status=404, body=""))
    try:
        page.goto(base_url + "/")
        sync_api.expect(page.get_by_test_id("users-failed")).to_contain_text("busy")
        sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items)")  # still there
        assert page.title() == "Catalog (32 items) · recsys shop"
        sync_api.expect(
            page.locator('[data-testid="catalog"] [data-item-id="a3"] .no-photo')
        ).to_have_count(1)
        last = card_ids(page, "catalog")[-1]
        page.evaluate("window.scrollTo(0, 400)")
        page.locator(f'[data-testid="catalog"] [data-item-id="{last}"]').click()
        sync_api.expect(page.get_by_test_id("product-title")).to_be_visible()
        assert page.evaluate("window.scrollY") == 0
        assert page.title().endswith(" · recsys shop") and page.title() != "recsys shop"
        assert page.evaluate("document.activeElement.tagName") == "H1"
        # the second row: shoppers who viewed it also viewed
        assert card_ids(page, "also")
    finally:
        page.unroute("**/v1/users?limit=30")
        page.unroute("**/images/a3")
    page.goto("about:blank")
    page.goto(base_url + "/#/?q=&after=24")  # a bookmarked second page, no history before
    page.get_by_text("← previous").click()
    sync_api.expect(page.locator(
        '[data-testid="catalog"] [data-testid="item-card"]')).to_have_count(24)  # fmt: skip
    assert page.url.startswith(base_url)
    page.route("**/v1/items/a1", lambda route: route.abort())
    try:
        page.goto(base_url + "/#/item/a1")
        sync_api.expect(page.get_by_test_id("error")).to_have_text(
            "the shop does not answer: check your connection and try again"
        )
    finally:
        page.unroute("**/v1/items/a1")


def test_a_sold_out_item_says_so_on_its_catalog_card(page, base_url):
    """The catalog grid lists sold-out items; only their product page said so."""
    page.goto(base_url + "/")
    card_ids(page, "catalog")
    cards = page.locator('[data-testid="catalog"] [data-testid="item-card"]')
    sold_out = cards.filter(has_text="sold out")
    sync_api.expect(sold_out).to_have_count(2)  # a3 and b3 (tests/toy.py)
    assert {sold_out.nth(n).get_attribute("data-item-id") for n in range(2)} == {"a3", "b3"}


# What of the page lies beyond the window's right edge (a page that scrolls sideways), in px.
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_a_255_character_item_id_keeps_a_320_px_page_within_the_window(page, base_url):
    """WCAG 1.4.10 Reflow: an item id may be 255 characters without a space; "item <id>" on
    its page and the error naming an unknown one scrolled the page sideways at 320 px."""
    long_id = "i" * 255

    def with_a_long_id(route):
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "item_id": long_id})

    page.set_viewport_size({"width": 320, "height": 800})
    page.route("**/v1/items/a1", with_a_long_id)
    try:
        page.goto(base_url + "/")  # a new view, not the one the test before left open
        page.goto(base_url + "/#/item/a1")
        sync_api.expect(page.get_by_text("item " + long_id)).to_be_visible()
        assert page.evaluate(SIDEWAYS) == 0
        page.goto(base_url + "/#/item/" + long_id)
        sync_api.expect(page.get_by_test_id("error")).to_contain_text(long_id)
        assert page.evaluate(SIDEWAYS) == 0
    finally:
        page.unroute("**/v1/items/a1")
        page.set_viewport_size({"width": 1280, "height": 800})


def test_page_two_of_the_catalog_says_it_is_page_two(page, base_url):
    """WCAG 2.4.2: page 2 had page 1's heading and title ("Catalog (32 items)")."""
    page.goto(base_url + "/")
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items)")
    page.get_by_test_id("next-page").click()
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items), page 2")
    assert page.title() == "Catalog (32 items), page 2 · recsys shop"
    page.goto(base_url + "/#/?q=&after=24")  # an address from before pages had numbers
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items), a later page")


def test_back_returns_the_keyboard_to_the_card_it_opened(page, base_url):
    """WCAG 2.4.3: Back focused the heading, and a keyboard user tabbed through the grid
    again to the card after the one they had opened."""
    page.goto(base_url + "/")
    chosen = page.locator('[data-testid="catalog"] [data-item-id="b2"]')
    chosen.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.get_by_test_id("product-title")).to_have_text("Drama story 2")
    similar = page.locator(
        f'[data-testid="similar"] [data-item-id="{card_ids(page, "similar")[3]}"]'
    )
    similar.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.get_by_test_id("product-title")).not_to_have_text("Drama story 2")
    page.go_back()
    sync_api.expect(page.get_by_test_id("product-title")).to_have_text("Drama story 2")
    sync_api.expect(similar).to_be_focused()
    # focus says the card: the status region says which view this is
    sync_api.expect(page.locator("#announce")).to_have_text("Drama story 2")
    page.go_back()
    sync_api.expect(chosen).to_be_focused()
    assert page.evaluate("window.scrollY") > 0  # the card is in view, far down the grid


def test_error_views_have_a_heading_and_the_search_box_says_what_is_wrong(page, base_url):
    """WCAG 1.3.1 and 3.3.1: an error view was a paragraph without a heading, in the API's
    words ("q: is 300 characters long"), tied to no field."""
    page.goto(base_url + "/")
    page.goto(base_url + "/#/item/no-such-item")
    sync_api.expect(page.locator("h1")).to_have_text("Not found")
    sync_api.expect(page.get_by_test_id("error")).to_contain_text("no-such-item")
    search = page.locator("#search-text")
    assert search.get_attribute("maxlength") == "200"
    search.fill("dr")
    search.press("Enter")
    sync_api.expect(page.locator("h1")).to_have_text("Search failed")
    error = page.get_by_test_id("error")
    sync_api.expect(error).to_contain_text(re.compile("^The search text 'dr' is too short"))
    sync_api.expect(search).to_have_attribute("aria-invalid", "true")
    sync_api.expect(search).to_have_accessible_description(error.text_content())
    page.goto(base_url + "/#/?q=" + "x" * 300)  # an address: no box's limit stops it
    sync_api.expect(error).to_have_text(
        "The search text is 300 characters long; a title search takes at most 200"
    )
    search.fill("drama")
    search.press("Enter")
    sync_api.expect(page.locator("h1")).to_have_text("Items matching “drama” (16)")
    assert search.get_attribute("aria-invalid") is None


def test_item_facts_and_grids_read_as_a_table_and_lists(page, base_url):
    """WCAG 1.3.1: the facts' names were plain cells, each grid a run of links without a
    count, and a card's name ended in its raw score ("score 1.971")."""
    page.goto(base_url + "/#/item/a1")
    facts = page.get_by_test_id("attributes")
    sync_api.expect(facts.get_by_role("rowheader", name="brand")).to_have_count(1)
    assert facts.locator("tr").count() == facts.locator("th[scope=row]").count() >= 4
    assert facts.locator("caption").text_content() == "Facts about this item"
    similar = page.get_by_test_id("similar")
    sync_api.expect(similar.get_by_role("listitem")).to_have_count(12)
    assert similar.evaluate("list => list.tagName") == "UL"
    sync_api.expect(similar.locator(".score").first).to_contain_text("score")  # for the eye
    sync_api.expect(page.get_by_role("link", name=re.compile("score"))).to_have_count(0)
    # still a grid of cards, side by side
    first_three = [similar.get_by_role("listitem").nth(n).bounding_box() for n in range(3)]
    assert len({round(box["y"]) for box in first_three}) == 1


def test_the_skip_link_is_the_first_tab_stop_and_goes_to_the_view(page, base_url):
    """WCAG 2.4.1: a keyboard went through the header's links and boxes on every view."""
    page.goto("about:blank")
    page.goto(base_url + "/")
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items)")
    skip = page.get_by_role("link", name="Skip to main content")
    assert skip.bounding_box()["y"] < 0  # out of sight until focused
    page.keyboard.press("Tab")
    sync_api.expect(skip).to_be_focused()
    assert skip.bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("h1")).to_be_focused()
    assert page.url == base_url + "/"  # not a route of its own
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.itemId") == "a0"


def test_inputs_have_visible_labels_and_an_empty_shopper_id_says_why(page, base_url):
    """WCAG 3.3.2: the boxes were named by placeholders that went as one typed, and Enter in
    an empty shopper box did nothing, in silence."""
    page.goto(base_url + "/")
    for box, name in (("search-text", "Search"), ("shopper-id", "Shopper id")):
        sync_api.expect(page.locator(f'label[for="{box}"]')).to_have_text(name)
        sync_api.expect(page.locator(f'label[for="{box}"]')).to_be_visible()
    shopper = page.get_by_label("Shopper id")
    shopper.press("Enter")
    sync_api.expect(shopper).to_have_attribute("aria-invalid", "true")
    sync_api.expect(shopper).to_have_accessible_description("Type a shopper id to open their feed.")
    shopper.fill("u9")
    assert shopper.get_attribute("aria-invalid") is None
    shopper.press("Enter")
    sync_api.expect(page.get_by_test_id("feed-title")).to_have_text("For u9")


def test_a_slow_view_says_loading_and_keeps_its_text_readable(page, base_url):
    """WCAG 4.1.3 and 1.4.3: loading was said to the eye only, and the view it dimmed to
    opacity .55 took its text to 2.4-3.8:1."""

    def slow(route):
        page.wait_for_timeout(1500)
        route.continue_()

    page.goto(base_url + "/")
    sync_api.expect(page.locator("h1")).to_have_text("Catalog (32 items)")
    page.route("**/v1/items/a1", slow)
    try:
        page.locator('[data-testid="catalog"] [data-item-id="a1"]').click()
        sync_api.expect(page.locator("#announce")).to_have_text("Loading…")
        assert page.locator("#view").get_attribute("aria-busy") == "true"
        opacity = """(node) => { let o = 1; for (; node; node = node.parentElement)
                       o *= Number(getComputedStyle(node).opacity); return o; }"""
        assert page.locator("#view h1").evaluate(opacity) == 1
        sync_api.expect(page.get_by_test_id("product-title")).to_be_visible()
        sync_api.expect(page.locator("#announce")).to_have_text("")
    finally:
        page.unroute("**/v1/items/a1")
