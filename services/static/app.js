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
  const extra = [item.in_stock === false ? "sold out" : null, price(item.attributes),
                 item.score !== undefined ? "score " + item.score.toFixed(3) : null];
  link.append(el("div", { class: "score", text: extra.filter(Boolean).join(" · ") }));
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
  const box = el("div", { class: "grid", "data-testid": testid });
  items.forEach((item) => box.append(card(item)));
  return box;
}

// Each navigation's number: a view answers only while it is the latest, so a slow answer
// for an item left behind never replaces the item shown now.
let shown = 0;

function show(turn, ...parts) {
  if (turn !== shown) return;
  view.removeAttribute("aria-busy");
  view.replaceChildren(...parts);
  // a screen reader hears what the view now is (its heading or error), not the whole grid
  const heading = view.querySelector("h1, .error");
  const said = heading ? heading.textContent : "";
  const announce = document.getElementById("announce");
  // the same words again (page 1 to page 2) are announced too
  announce.textContent = announce.textContent === said ? said + "\u00a0" : said;
  // each view is its own page: it starts at its top, the keyboard starts at its heading,
  // and the tab and history entry are named after it
  document.title = said ? `${said} · recsys shop` : "recsys shop";
  window.scrollTo(0, 0);
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function fail(error, turn = shown) {
  show(turn, el("p", { class: "error", "data-testid": "error", text: error.message }));
}

async function browse(params, turn) {
  // pages follow one another by key (after: the next of the page before), as deep as the catalog
  const after = params.get("after");
  const q = params.get("q") || "";
  document.getElementById("search-text").value = q;  // a reloaded search shows what it is
  const key = after === null ? "" : `&after=${encodeURIComponent(after)}`;
  const page = await api(`/v1/items?limit=${PAGE}&q=${encodeURIComponent(q)}${key}`);
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
    const next = "#/?q=" + encodeURIComponent(q) + "&after=" + page.next;
    pager.append(el("a", { href: next, text: "next →", "data-testid": "next-page" }));
  }
  // total counts up to a limit; past it (total_exact false) there are more
  const count = page.total.toLocaleString("en-US") + (page.total_exact ? "" : "+");
  const title = q ? `Items matching “${q}” (${count})` : `Catalog (${count} items)`;
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
  const rows = el("table", { "data-testid": "attributes" });
  for (const [name, value] of Object.entries(item.attributes)) {
    const shown = name === "price" ? price(item.attributes) : Array.isArray(value) ? value.join(", ") : String(value);
    const label = name.replaceAll("_", " ");  // a column name: colour_tone reads "colour tone"
    rows.append(el("tr", {}, el("td", { class: "muted name", text: label }), el("td", { text: shown })));
  }
  rows.append(el("tr", {}, el("td", { class: "muted", text: "in stock" }),
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

// A new view is on its way: the one shown says so (screen readers too) until it comes.
function navigate() {
  shown += 1;
  view.setAttribute("aria-busy", "true");
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

function route() {
  const turn = navigate();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const id = (prefix) => {
    const text = decodeURIComponent(path.slice(prefix.length));  // a URIError on a bad escape
    if (!text) throw new Error("this address names no id: follow a link from the catalog");
    return text;
  };
  try {
    let work;
    if (path === "/photo") work = photoSearch(turn);
    else if (path.startsWith("/item/")) work = product(id("/item/"), turn);
    else if (path.startsWith("/user/")) work = feed(id("/user/"), turn);
    else work = browse(new URLSearchParams(query || ""), turn);
    work.catch((error) => fail(error, turn));
  } catch (error) {
    fail(error instanceof URIError ? new Error("this address is malformed: " + location.hash) : error, turn);
  }
}

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("search-text").value.trim();  // spaces alone: the catalog
  location.hash = q ? "#/?q=" + encodeURIComponent(q) : "#/";
});
document.getElementById("shopper-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = document.getElementById("shopper-id").value.trim();
  if (userId) location.hash = "#/user/" + encodeURIComponent(userId);
});
document.getElementById("photo").addEventListener("change", (event) => {
  if (!event.target.files.length) return;
  searchPhoto = event.target.files[0];
  event.target.value = "";  // the same photo chosen again searches again
  // its own history entry: Back leaves the results, the logo goes home from them
  if (location.hash !== "#/photo") location.hash = "#/photo";
  else route();
});
// navigations within this page: "← previous" goes back only where there is a page to go to
let steps = 0;
window.addEventListener("hashchange", () => { steps += 1; route(); });
users();
route();
