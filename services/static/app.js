// The shop page: hash routes over the JSON API (#/, #/?q=, #/item/ID, #/user/ID, #/photo).
"use strict";

const view = document.getElementById("view");
const PAGE = 24;
const TIMEOUT_MS = 30_000;  // an answer the page waits for at most (the service's own bound is 15 s)
// the shop's currency (RECSYS_CURRENCY, ISO 4217), or "" for prices shown as numbers alone
const CURRENCY = document.documentElement.dataset.currency || "";

// A price as the shop writes it: "€29.90" with a currency, "29.90" without; no price is "",
// and anything that is not a number is shown as it is. ``currency``: the item's own (its
// `currency` attribute, an ISO 4217 code such as "GBP"), else the shop's: a shop selling in
// several currencies showed every price in the one RECSYS_CURRENCY.
function money(value, currency) {
  if (value === null || value === undefined || value === "") return "";
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  const own = typeof currency === "string" && /^[A-Za-z]{3}$/.test(currency);  // else the shop's
  const code = own ? currency.toUpperCase() : CURRENCY;
  if (!code) return number.toFixed(2);
  return new Intl.NumberFormat("en", { style: "currency", currency: code }).format(number);
}

// An item's price in its own currency (see money).
function price(attributes) {
  return money(attributes && attributes.price, attributes && attributes.currency);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// The API's JSON; an error answer's message, or for a page that is not the API's JSON (a
// proxy's 502 page, a timeout) its status, not a JSON parse error.
async function api(path, options) {
  let response;
  try {
    // a hung answer ends: the view said "Loading…" and stayed dimmed for good
    response = await fetch(path, { ...options, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {  // the browser's own words ("Failed to fetch") say nothing to a shopper
    if (error.name === "TimeoutError") {
      throw new Error("the shop is taking too long to answer; try again in a moment");
    }
    throw new Error("the shop does not answer: check your connection and try again");
  }
  const json = (response.headers.get("Content-Type") || "").includes("application/json");
  let body = null;
  if (json) {
    try {
      body = await response.json();
    } catch {
      throw new Error(`the shop's answer could not be read (${response.status}); try again`);
    }
  }
  if (!response.ok || body === null) {
    const message = body && body.error ? body.error.message
      : `the server answered ${response.status} ${response.statusText}`.trim();
    const error = new Error(message);
    error.status = response.status;
    error.code = body && body.error ? body.error.code : null;
    throw error;
  }
  return body;
}

// Whether the served bundle searches by photo (/readyz image_search): a catalog without
// photos offered a "Search by photo" box whose every search failed. Not known: not offered.
const imageSearch = api("/readyz").then((body) => body.image_search === true, () => false);
imageSearch.then((offered) => { document.getElementById("photo-form").hidden = !offered; });

function showModel(version) {
  if (version) document.getElementById("model").textContent = "model " + version;
}

function card(item) {
  const link = el("a", { class: "card", href: "#/item/" + encodeURIComponent(item.item_id),
                         "data-testid": "item-card", "data-item-id": item.item_id });
  // the title follows as text: the photo adds nothing a screen reader should say twice
  if (item.image_url) link.append(photo(item.image_url, ""));
  link.append(el("div", { class: "title", dir: "auto", text: item.title || item.item_id }));
  // the catalog grid lists sold-out items too: say so on the card, not only on its page
  const said = [item.in_stock === false ? "sold out" : null, price(item.attributes)].filter(Boolean);
  const facts = el("div", { class: "score", text: said.join(" · ") });
  // the raw score is for the eye: a link named "… score 1.500" tells a screen reader nothing
  if (item.score !== undefined) {
    facts.append(el("span", { "aria-hidden": "true",
                              text: (said.length ? " · " : "") + "score " + item.score.toFixed(3) }));
  }
  link.append(facts);
  const why = because(item);
  if (why) link.append(el("div", { class: "because", "data-testid": "because", text: why }));
  return link;
}

// One line from the reasons the API gives: the history items a feed item comes from, or the
// largest parts of a similar item's score (as shares of the score).
function because(item) {
  const reasons = item.because || [];
  const viewed = reasons.filter((r) => r.item_id).map((r) => r.title || r.item_id);
  // titles hold commas ("Corvo ankle boots, mid"): a comma between them would run them together
  if (viewed.length) return "because you viewed " + viewed.join(" · ");
  const positive = reasons.filter((r) => r.share > 0);
  const total = positive.reduce((sum, r) => sum + r.share, 0);
  if (!positive.length) return "";
  if (positive.length === 1) return positive[0].label;
  return positive.slice(0, 2).map((r) => `${r.label} ${Math.round((100 * r.share) / total)}%`).join(" · ");
}

// A photo that falls back to a plain placeholder when its file cannot be loaded (a broken
// image icon in a black box otherwise).
function photo(src, alt) {
  const image = el("img", { src, alt });
  image.addEventListener("error", () => image.replaceWith(el("div", { class: "no-photo" })));
  return image;
}

function grid(items, testid) {
  if (!items.length) return el("p", { class: "muted", "data-testid": testid, text: "Nothing to show here." });
  // a list: a screen reader says how many items it holds
  return el("ul", { class: "grid", "data-testid": testid }, ...items.map((item) => el("li", {}, card(item))));
}

// Each navigation's number: a view answers only while it is the latest, so a slow answer
// for an item left behind never replaces the item shown now.
let shown = 0;
// How the latest view was reached: "load" (the page opened: a screen reader reads it from the
// top, the skip link first), "link" (a link, a search) or "history" (Back, Forward).
let arrival = "load";
let loading = 0;  // the timer that says "Loading…" when a wait is long enough to notice

// Said by screen readers (a status region outside the view): only what focus does not say.
function say(text) {
  const announce = document.getElementById("announce");
  // the same words again (the same error twice) are said again too
  announce.textContent = text && announce.textContent === text ? text + "\u00a0" : text;
}

function show(turn, ...parts) {
  if (turn !== shown) return;
  clearTimeout(loading);
  view.removeAttribute("aria-busy");
  view.replaceChildren(...parts);
  // each view is its own page: it starts at its top, and the tab and history entry are
  // named after its heading
  const heading = view.querySelector("h1");
  const title = heading ? heading.textContent : "";
  document.title = title ? `${title} · recsys shop` : "recsys shop";
  window.scrollTo(0, 0);
  const opened = arrival === "history" ? returnedTo() : null;
  if (arrival === "load") {
    say("");
  } else if (opened) {  // back where the keyboard left: focus says the link, not which view this is
    opened.focus();
    say(title);
  } else if (heading) {  // the keyboard starts at the heading, which focus says
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
    const error = view.querySelector(".error");
    say(error ? error.textContent : "");
  }
}

// The link a shopper left this view by (its history entry keeps it: see the click listener),
// in the view shown again; null where it is not there any more.
function returnedTo() {
  const opened = history.state && history.state.opened;
  if (!opened) return null;
  if (opened.item) {
    const within = opened.grid ? `[data-testid="${opened.grid}"] ` : "";
    return [...view.querySelectorAll(within + "a.card")]
      .find((link) => link.dataset.itemId === opened.item) || null;
  }
  return [...document.querySelectorAll("a")].find((link) => link.getAttribute("href") === opened.href) || null;
}

// An error view: a heading saying what failed ("Not found" for what is not there), then the
// service's words.
function fail(error, turn = shown, heading = "Something went wrong") {
  show(turn, el("h1", { text: error.status === 404 ? "Not found" : heading }),
       el("p", { class: "error", id: "view-error", "data-testid": "error", text: error.message }));
}

// A field whose value the view's error is about: a screen reader says so on the field.
function invalid(input, errorId) {
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", errorId);
}

function valid(input) {
  input.removeAttribute("aria-invalid");
  input.removeAttribute("aria-describedby");
}

async function browse(params, turn) {
  // pages follow one another by key (after: the next of the page before), as deep as the catalog
  const after = params.get("after");
  const q = params.get("q") || "";
  const search = document.getElementById("search-text");
  search.value = q;  // a reloaded search shows what it is
  // the page's number, carried by "next →" (an address without it: a later page)
  const asked = params.get("page");
  const number = after === null ? 1 : /^[1-9]\d*$/.test(asked || "") ? Number(asked) : null;
  const key = after === null ? "" : `&after=${encodeURIComponent(after)}`;
  let page;
  try {
    page = await api(`/v1/items?limit=${PAGE}&q=${encodeURIComponent(q)}${key}`);
  } catch (error) {
    // the search text's fault (too short, too long): said of the search box, in its words
    if (q && error.code === "invalid_parameter" && error.message.startsWith("q: ")) {
      error.message = "The search text " + error.message.slice(3);
      if (turn === shown) invalid(search, "view-error");
    }
    throw error;
  }
  const pager = el("div", { class: "pager" });
  if (after !== null) {
    // back in this page's history; opened on a later page (a link, a bookmark), back to the
    // first page rather than off the site
    const first = "#/?q=" + encodeURIComponent(q);
    const back = el("a", { href: first, text: "← previous" });
    back.addEventListener("click", (event) => {
      if (steps > 0) { event.preventDefault(); history.back(); }
    });
    pager.append(back);
  }
  if (page.next !== null) {
    const next = "#/?q=" + encodeURIComponent(q) + "&after=" + page.next +
      (number ? "&page=" + (number + 1) : "");
    pager.append(el("a", { href: next, text: "next →", "data-testid": "next-page" }));
  }
  // total counts up to a limit; past it (total_exact false) there are more
  const count = page.total.toLocaleString("en-US") + (page.total_exact ? "" : "+");
  // page 2 is not page 1: its heading and title say which it is
  const which = number === 1 ? "" : number ? `, page ${number}` : ", a later page";
  const title = (q ? `Items matching “${q}” (${count})` : `Catalog (${count} items)`) + which;
  show(turn, el("h1", { text: title }), grid(page.items, "catalog"), pager);
}

async function product(itemId, turn) {
  const path = "/v1/items/" + encodeURIComponent(itemId);
  const [item, similar, also] = await Promise.all([
    api(path),
    api(path + "/similar?k=12"),
    // the second row is a bonus: the page shows without it when it fails
    api(path + "/similar?k=12&mode=also").catch(() => null),
  ]);
  showModel(similar.model_version);
  const rows = el("table", { "data-testid": "attributes" },
                  el("caption", { class: "visually-hidden", text: "Facts about this item" }));
  for (const [name, value] of Object.entries(item.attributes)) {
    const shown = name === "price" ? price(item.attributes) : Array.isArray(value) ? value.join(", ") : String(value);
    const label = name.replaceAll("_", " ");  // a column name: colour_tone reads "colour tone"
    rows.append(el("tr", {}, el("th", { scope: "row", class: "muted name", text: label }), el("td", { text: shown })));
  }
  rows.append(el("tr", {}, el("th", { scope: "row", class: "muted name", text: "in stock" }),
                 el("td", { text: item.in_stock ? "yes" : "no" })));
  // an item without a photo is its facts alone: no grey square standing in for one
  const picture = item.image_url ? [photo(item.image_url, item.title || "")] : [];
  show(
    turn,
    el("div", { class: picture.length ? "product" : "product text-only" }, ...picture,
       el("div", {}, el("h1", { "data-testid": "product-title", dir: "auto", text: item.title || item.item_id }),
          el("p", { class: "muted", text: "item " + item.item_id }), rows)),
    el("h2", { text: "Similar items" }),
    grid(similar.items, "similar"),
    ...(also && also.items.length
      ? [el("h2", { text: "Shoppers who viewed this also viewed" }), grid(also.items, "also")]
      : []));
}

async function feed(userId, turn) {
  const body = await api("/v1/users/" + encodeURIComponent(userId) + "/recommendations?k=24");
  showModel(body.model_version);
  const parts = [el("h1", { "data-testid": "feed-title", text: "For " + userId })];
  if (body.fallback) {
    parts.push(el("p", { class: "notice", "data-testid": "fallback",
                         text: "New shopper: showing popular items until we learn their taste." }));
  }
  parts.push(grid(body.items, "feed"));
  show(turn, ...parts);
}

// The photo of the last search by photo (a photo cannot go in the address: #/photo shows the
// results of this one, and after a reload asks for one).
let searchPhoto = null;

async function photoSearch(turn) {
  if (!searchPhoto) {
    const text = (await imageSearch) ? "Choose a photo with the button at the top of the page."
      : "This shop's catalog has no photos to search by.";
    show(turn, el("h1", { text: "Search by photo" }), el("p", { class: "muted", text }));
    return;
  }
  const form = new FormData();
  form.append("image", searchPhoto);
  const body = await api("/v1/search/image?k=24", { method: "POST", body: form });
  showModel(body.model_version);
  show(turn, el("h1", { text: "Looks like your photo" }), grid(body.items, "visual"));
}

// A new view is on its way: the one shown says so until it comes, and screen readers hear
// "Loading…" where the wait is long enough to notice (a quick view's heading follows at once).
function navigate(how) {
  shown += 1;
  arrival = how;
  view.setAttribute("aria-busy", "true");
  valid(document.getElementById("search-text"));
  clearTimeout(loading);
  loading = setTimeout(() => say("Loading…"), 500);
  return shown;
}

// Listing shoppers needs an API key with users:read unless the server makes it public; the
// page holds no key, so then it only offers the shopper-id box.
async function users() {
  const list = document.getElementById("users");
  let body;
  try {
    body = await api("/v1/users?limit=30");
  } catch (error) {
    // the list is a side panel: its failure stays there, never in place of the view
    const text = error.status === 401 || error.status === 403
      ? "Type a shopper id above: listing shoppers needs an API key."
      : "Shoppers could not be listed (" + error.message + "); type a shopper id above.";
    const testid = error.status === 401 || error.status === 403 ? "users-private" : "users-failed";
    list.replaceChildren(el("li", { class: "muted", "data-testid": testid, text }));
    return;
  }
  list.replaceChildren(...body.users.map((user) =>
    el("li", {}, el("a", { href: "#/user/" + encodeURIComponent(user.user_id), "data-testid": "user-link",
                           text: `${user.user_id} (${user.interactions})` }))));
}

// how: "load", "link" or "history" (see arrival)
function route(how) {
  const turn = navigate(how);
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const id = (prefix) => {
    const text = decodeURIComponent(path.slice(prefix.length));  // a URIError on a bad escape
    if (!text) throw new Error("this address names no id: follow a link from the catalog");
    return text;
  };
  try {
    let work, heading;
    if (path === "/photo") {
      [work, heading] = [photoSearch(turn), "Search by photo failed"];
    } else if (path.startsWith("/item/")) {
      [work, heading] = [product(id("/item/"), turn), "This item could not be shown"];
    } else if (path.startsWith("/user/")) {
      [work, heading] = [feed(id("/user/"), turn), "This feed could not be shown"];
    } else {
      const params = new URLSearchParams(query || "");
      const what = params.get("q") ? "Search failed" : "The catalog could not be shown";
      [work, heading] = [browse(params, turn), what];
    }
    work.catch((error) => fail(error, turn, heading));
  } catch (error) {
    const said = error instanceof URIError ? new Error("this address is malformed: " + location.hash) : error;
    fail(said, turn, "Not found");
  }
}

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("search-text").value.trim();  // spaces alone: the catalog
  location.hash = q ? "#/?q=" + encodeURIComponent(q) : "#/";
});
const shopper = document.getElementById("shopper-id");
document.getElementById("shopper-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = shopper.value.trim();
  // an empty box said nothing: it says why nothing opened
  if (userId) shopper.removeAttribute("aria-invalid");
  else shopper.setAttribute("aria-invalid", "true");  // an empty value ("") reads as false
  const why = userId ? "" : "Type a shopper id to open their feed.";
  document.getElementById("shopper-error").textContent = why;
  if (userId) location.hash = "#/user/" + encodeURIComponent(userId);
});
shopper.addEventListener("input", () => {
  shopper.removeAttribute("aria-invalid");
  document.getElementById("shopper-error").textContent = "";
});
document.getElementById("photo").addEventListener("change", (event) => {
  if (!event.target.files.length) return;
  searchPhoto = event.target.files[0];
  event.target.value = "";  // the same photo chosen again searches again
  // its own history entry: Back leaves the results, the logo goes home from them
  if (location.hash !== "#/photo") location.hash = "#/photo";
  else route("link");
});
// Where a shopper leaves a view by a link (a card, "next →"), its history entry keeps which:
// Back focuses that link again, not the heading (a keyboard user lost their place).
document.addEventListener("click", (event) => {
  const link = event.target.closest('a[href^="#/"]');
  if (!link) return;
  const grid = link.closest("ul.grid");
  const opened = link.dataset.itemId
    ? { item: link.dataset.itemId, grid: grid ? grid.dataset.testid : null }
    : { href: link.getAttribute("href") };
  history.replaceState({ ...history.state, opened }, "");
});
// The skip link: to the view's heading (its own address, #main, would be one of this page's routes)
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  const target = view.querySelector("h1") || document.getElementById("main");
  target.setAttribute("tabindex", "-1");
  target.focus();
});
// navigations within this page: "← previous" goes back only where there is a page to go to
let steps = 0;
// a new address (a link, a search) has no state of its own: Back and Forward find theirs
window.addEventListener("hashchange", () => {
  steps += 1;
  route(history.state && history.state.opened ? "history" : "link");
});
users();
route("load");
