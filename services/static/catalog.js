// The catalog-health page: duplicate sets, outliers and a cluster map from the admin API
// (/v1/admin/catalog/*). The admin key stays in this tab's sessionStorage.
"use strict";

const KEY = "recsys-admin-key";
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"];
let clusterData = null;
// Each load's number: only the latest one's answers are shown (an older, slower answer for
// another threshold overwrote the newer one) and an older one's 202 polling stops.
let loads = 0;

class Superseded extends Error {}

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "circle", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
                   : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function colour(cluster) { return COLOURS[cluster % COLOURS.length]; }

// An admin endpoint's answer; a 202 (still computing, minutes on a large catalog) is asked
// again after its Retry-After.
async function admin(path, turn) {
  for (;;) {
    if (turn !== loads) throw new Superseded();
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
    const json = (response.headers.get("Content-Type") || "").includes("application/json");
    const body = json ? await response.json() : null;  // a proxy's HTML page is no JSON
    if (!response.ok || body === null) {
      const error = new Error(body && body.error ? body.error.message
        : `the server answered ${response.status} ${response.statusText}`.trim());
      error.status = response.status;
      throw error;
    }
    if (response.status !== 202) return body;
    if (turn !== loads) throw new Superseded();
    const status = document.getElementById("status");
    status.className = "notice";
    status.textContent = "Computing… (a large catalog takes minutes; this page asks again)";
    await new Promise((done) => setTimeout(done, 1000 * (body.retry_after || 2)));
  }
}

function card(item, extra) {
  const link = el("a", { class: "card", href: "/#/item/" + encodeURIComponent(item.item_id),
                         "data-testid": "item-card", "data-item-id": item.item_id });
  // the title follows as text: the photo adds nothing a screen reader should say twice
  if (item.image_url) link.append(el("img", { src: item.image_url, alt: "" }));
  link.append(el("div", { class: "title", text: item.title || item.item_id }));
  if (extra) link.append(el("div", { class: "score", text: extra }));
  return link;
}

function duplicateRule(data) {
  // What decided the pairs: their photos (verified score), the vectors' cosine capped by the
  // titles' (no photos), or the vectors alone (cosine).
  if (data.score === "verified") {
    return `cosine ≥ ${data.threshold}, confirmed by their photos ` +
      `(verified score ≥ ${data.verified_threshold.toFixed(4)}, ${data.verified_pairs} pair(s) checked)`;
  }
  if (data.score === "cosine and titles") {
    return `cosine ≥ ${data.threshold}, titles' words included (no photos)`;
  }
  return `cosine ≥ ${data.threshold} (vectors only)`;
}

function showDuplicates(data) {
  const box = document.getElementById("duplicates");
  box.replaceChildren();
  const rule = el("p", { class: "muted", "data-testid": "duplicate-rule" });
  box.append(rule);
  if (!data.sets.length) {
    rule.textContent = `No duplicates at ${duplicateRule(data)}.`;
    return;
  }
  rule.textContent = `${data.total_sets} set(s) at ${duplicateRule(data)}`;
  const label = data.score === "verified" ? "verified " : "cosine ";
  for (const set of data.sets) {
    const row = el("div", { class: "dup-set", "data-testid": "duplicate-set" });
    for (const item of set.items) row.append(card(item));
    if (set.size > set.items.length) {
      row.append(el("span", { class: "muted", text: `and ${set.size - set.items.length} more` }));
    }
    row.append(el("span", { class: "similarity", text: label + set.similarity.toFixed(4) }));
    box.append(row);
  }
}

function showOutliers(data) {
  // the flagged ones (above the threshold) say so: the list also shows the next few
  const box = document.getElementById("outliers");
  box.replaceChildren(...data.items.map((item) => {
    const shown = card(item, "score " + item.score.toFixed(3) + (item.flagged ? " · flagged" : ""));
    if (item.flagged) shown.classList.add("flagged");
    return shown;
  }));
}

function showClusters(data) {
  clusterData = data;
  const map = document.getElementById("map");
  map.replaceChildren(...data.points.map((p) => {
    const dot = el("circle", { cx: p.x, cy: -p.y, r: 0.03, fill: colour(p.cluster),
                               "data-cluster": p.cluster, "data-item-id": p.item_id });
    dot.append(el("title", { text: `${p.item_id} (cluster ${p.cluster})` }));
    dot.addEventListener("click", () => selectCluster(p.cluster));
    return dot;
  }));
  const list = el("div", { class: "cluster-list" });
  for (const c of data.clusters) {
    // every cluster is one tab stop here (the map's dots are for the mouse), named in full
    // its accessible name starts with what it shows ("144 bags"), then says the rest
    const button = el("button", { type: "button", "data-testid": "cluster-button",
                                  "data-cluster": c.cluster, "aria-pressed": "false",
                                  "aria-label": `${c.size} ${c.value || "items"}: cluster ` +
                                    `${c.cluster}, ${c.size} items` +
                                    (c.value ? `, ${clusterName(c)}` : "") });
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colour(c.cluster);  // not a style attribute: the page's CSP
    button.append(swatch);
    if (c.medoid.image_url) button.append(el("img", { src: c.medoid.image_url, alt: "" }));
    button.append(el("span", { text: `${c.size} ` }));
    if (c.value) button.append(el("span", { class: "muted", text: c.value }));
    button.addEventListener("click", () => selectCluster(c.cluster));
    list.append(button);
  }
  document.getElementById("clusters").replaceChildren(list, el("div", { id: "members" }));
  if (data.clusters.length) selectCluster(data.clusters[0].cluster, false);
}

// What most of a cluster's items share: "footwear (department, 98%)".
function clusterName(c) {
  return `${c.value} (${c.attribute.replaceAll("_", " ")}, ${Math.round(100 * c.share)}%)`;
}

// said: whether a screen reader hears the choice (a click, not the first one shown on loading)
function selectCluster(cluster, said = true) {
  const c = clusterData.clusters.find((x) => x.cluster === cluster);
  for (const b of document.querySelectorAll(".cluster-list button")) {
    const chosen = Number(b.dataset.cluster) === cluster;
    b.classList.toggle("active", chosen);
    b.setAttribute("aria-pressed", String(chosen));  // not by its border's colour alone
  }
  for (const dot of document.querySelectorAll("#map circle"))
    dot.classList.toggle("active", Number(dot.dataset.cluster) === cluster);
  const members = el("div", { class: "grid", "data-testid": "cluster-members" },
                     ...c.members.map((item) => card(item)));
  const named = c.value ? ` (${clusterName(c)})` : "";
  document.getElementById("members").replaceChildren(
    el("p", { "data-testid": "cluster-name",
              text: `Cluster ${cluster}${named}: ${c.size} items; the first is its medoid.` }),
    el("div", { class: "grid" }, card(c.medoid, "medoid")), el("h3", { text: "Members" }),
    members);
  // a short status, not the members' titles (the whole list was a live region: 12 of them)
  document.getElementById("cluster-status").textContent = said
    ? `Cluster ${cluster}${c.value ? ` (${c.value})` : ""}: ${c.size} items` : "";
}

// Each section shows its own answer or its own error: one that fails (a bad photo in the
// duplicate check) blanked the other two.
const SECTIONS = {
  duplicates: { boxes: ["duplicates"], show: showDuplicates },
  outliers: { boxes: ["outliers"], show: showOutliers },
  clusters: { boxes: ["map", "clusters", "members"], show: showClusters },
};

// The key box: marked invalid (and described by the status that says why), or not.
function keyInvalid(wrong) {
  const key = document.getElementById("key");
  if (wrong) {
    key.setAttribute("aria-invalid", "true");
    key.setAttribute("aria-describedby", "status");
  } else {
    key.removeAttribute("aria-invalid");
    key.removeAttribute("aria-describedby");
  }
}

// asked: a person asked (Show, Update), so a missing key is said, not passed over in silence
async function load(asked = false) {
  const turn = ++loads;
  const status = document.getElementById("status");
  document.getElementById("cluster-status").textContent = "";
  if (!sessionStorage.getItem(KEY)) {
    if (asked) {
      status.className = "error";
      status.textContent = "Enter an admin key above first: the catalog's health needs one.";
      keyInvalid(true);
    }
    return;
  }
  status.className = "notice";
  status.textContent = "Computing…";
  const threshold = document.getElementById("threshold").value;
  const paths = {
    duplicates: "/v1/admin/catalog/duplicates?threshold=" + encodeURIComponent(threshold),
    outliers: "/v1/admin/catalog/outliers?top=24",
    clusters: "/v1/admin/catalog/clusters",
  };
  const names = Object.keys(SECTIONS);
  const results = await Promise.allSettled(names.map((name) => admin(paths[name], turn)));
  if (turn !== loads) return;  // a later load shows its own answers
  const answers = {}, errors = [];
  results.forEach((result, n) => {
    const name = names[n], section = SECTIONS[name];
    // what an earlier answer showed is not this request's: cleared first
    for (const id of section.boxes) document.getElementById(id)?.replaceChildren();
    if (result.status === "fulfilled") {
      answers[name] = result.value;
      section.show(result.value);
    } else {
      errors.push(`${name}: ${result.reason.message}`);
      document.getElementById(section.boxes[section.boxes.length > 1 ? 1 : 0]).replaceChildren(
        el("p", { class: "error", "data-testid": "section-error", text: result.reason.message }));
    }
  });
  const any = answers.duplicates || answers.outliers || answers.clusters;
  document.getElementById("model").textContent = any ? "model " + any.model_version : "";
  const refused = [401, 403].includes(results[0].reason && results[0].reason.status);
  keyInvalid(!any && refused);
  if (!any) {  // a refused key, a server down: one message, not three
    status.className = "error";
    status.textContent = results[0].reason.message;
    for (const id of ["duplicates", "outliers", "clusters"]) {
      document.getElementById(id).replaceChildren();
    }
    return;
  }
  const parts = [];
  if (answers.outliers) {
    parts.push(`${answers.outliers.flagged} item(s) flagged as outliers (expected ` +
      "false-positive rate 1%)");
  }
  if (answers.clusters) parts.push(`${answers.clusters.k} clusters`);
  status.className = errors.length ? "error" : "notice";
  status.textContent = [parts.join("; "), ...errors.map((e) => "failed: " + e)]
    .filter(Boolean).join(". ") + ".";
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("key").value);
  load(true);
});
document.getElementById("dup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load(true);
});
load();
