"""Two shops of the session-66 walkthroughs, made again from their seeds: an electronics shop
whose signal is in numbers and dates (brands, yearly models, price bands, accessories after a
phone; spec values with units; ten absurd prices) and a bookshop without photos whose signal
is text and authors (series read in order, each work in one to three formats, 124 new books
after the last event). `recsys evaluate` on them is in benchmarks/RESULTS.md, session 66.

    python scripts/walkthrough_shops.py electronics --out DIR   # DIR/items.csv, interactions.csv
    python scripts/walkthrough_shops.py books --out DIR        # items.csv, events.csv, truth.json
    recsys db upgrade && recsys ingest items DIR/items.csv && recsys ingest interactions DIR/...
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
from collections import Counter
from pathlib import Path


def say(*args) -> None:
    print(*args)


def electronics(out: str) -> None:
    rng = random.Random(7)
    n = 0
    brands = [
        f"{w}"
        for w in [
            "Apex",
            "Borealis",
            "Corvo",
            "Dynex",
            "Elara",
            "Fenwick",
            "Gryphon",
            "Helio",
            "Ionix",
            "Juno",
            "Kestrel",
            "Lumen",
            "Matrix",
            "Nimbus",
            "Orion",
            "Pulsar",
            "Quanta",
            "Rivet",
            "Solace",
            "Titan",
            "Umbra",
            "Vertex",
            "Wavely",
            "Xeno",
            "Yonder",
            "Zephyr",
            "Aurum",
            "Blaze",
            "Cobalt",
            "Delta",
            "Ember",
            "Flux",
            "Glint",
            "Halo",
            "Iris",
            "Jolt",
            "Krypt",
            "Lyra",
            "Mosaic",
            "Nova",
        ]
    ]
    years = list(range(2019, 2027))  # 2026 = newest
    cats = {
        "phones": (300, 1400),
        "laptops": (500, 3000),
        "headphones": (30, 400),
        "tvs": (300, 2500),
    }
    lines = {
        "phones": ["Phone X", "Phone Lite", "Phone Pro"],
        "laptops": ["Book", "Book Pro"],
        "headphones": ["Buds", "Studio"],
        "tvs": ["Vision"],
    }
    items = []
    n = 0

    def iid():
        nonlocal n
        n += 1
        return f"g-{n:05d}"

    for b_i, b in enumerate(brands):
        tier = 0.6 + 0.9 * (b_i % 5) / 4  # brand price tier 0.6..1.5
        for cat, (lo, hi) in cats.items():
            for ln in lines[cat]:
                if rng.random() < 0.35:
                    continue
                base = rng.uniform(lo, hi) * tier
                start_gen = 8 + rng.randint(0, 3)
                for yi, y in enumerate(years[rng.randint(0, 3) :]):
                    gen = start_gen + (y - 2019)
                    rel = dt.date(y, rng.randint(1, 10), rng.randint(1, 28))
                    price = round(base * (1 + 0.05 * yi) * rng.lognormvariate(0, 0.1), 2)
                    row = dict(
                        item_id=iid(),
                        title=f"{b} {ln} {gen}",
                        category=cat,
                        brand=b,
                        line=f"{b} {ln}",
                        model_year=y,
                        release_date=rel.isoformat(),
                        price=price,
                        currency=rng.choice(["EUR", "EUR", "USD"]),
                        ram="",
                        storage="",
                        screen="",
                    )
                    if cat in ("phones", "laptops"):
                        ram = rng.choice([4, 6, 8] if cat == "phones" else [8, 16, 32]) * (
                            1 + (y >= 2023)
                        )
                        sto = rng.choice(
                            [64, 128, 256] if cat == "phones" else [256, 512, 1024]
                        ) * (1 + (y >= 2024))
                        scr = (
                            round(rng.uniform(5.8, 6.9), 1)
                            if cat == "phones"
                            else rng.choice([13.3, 14.0, 15.6, 16.0])
                        )
                        r = rng.random()
                        row["ram"] = f"{ram} GB" if r < 0.15 else ("" if r < 0.2 else ram)
                        row["storage"] = f"{sto}GB" if r > 0.9 else sto
                        row["screen"] = (
                            f'{scr}"'
                            if rng.random() < 0.15
                            else ("" if rng.random() < 0.05 else scr)
                        )
                    elif cat == "tvs":
                        row["screen"] = rng.choice([43, 50, 55, 65, 75])
                    items.append(row)
    # accessories: cables/cases/chargers, 5-30
    acc_kinds = [
        "USB-C cable",
        "Lightning cable",
        "Phone case",
        "Charger 65W",
        "Screen protector",
        "HDMI cable",
    ]
    while len(items) < 2500:
        b = rng.choice(brands)
        k = rng.choice(acc_kinds)
        y = rng.choice(years)
        items.append(
            dict(
                item_id=iid(),
                title=f"{b} {k} {rng.randint(1, 99)}",
                category="accessories",
                brand=b,
                line=f"{b} {k}",
                model_year=y,
                release_date=dt.date(y, rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
                price=round(rng.uniform(5, 30), 2),
                currency=rng.choice(["EUR", "USD"]),
                ram="",
                storage="",
                screen="",
            )
        )
    # price anomalies
    rng.seed(99)
    anom = rng.sample(range(len(items)), 10)
    for j, i in enumerate(anom):
        items[i]["price"] = 0 if j < 5 else 999999
    say("price0:", [items[i]["item_id"] for i in anom[:5]])
    say("price999999:", [items[i]["item_id"] for i in anom[5:]])
    items.sort(key=lambda r: rng.random())  # mixed order so the first batch has everything
    # put anomalies where? keep shuffled
    cols = [
        "item_id",
        "title",
        "category",
        "brand",
        "line",
        "model_year",
        "release_date",
        "price",
        "currency",
        "ram",
        "storage",
        "screen",
    ]
    with open(f"{out}/items.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(items)
    # events
    {r["item_id"]: r for r in items}

    def P(r):
        return float(r["price"])

    [r for r in items if r["category"] == "phones" and int(r["model_year"]) <= 2025]
    acc = [r for r in items if r["category"] == "accessories"]
    nonacc = [
        r
        for r in items
        if r["category"] != "accessories" and int(r["model_year"]) <= 2025 and 0 < P(r) < 10000
    ]
    end = dt.datetime(2026, 11, 30)
    ev = []
    for u in range(1100):
        uid = f"u-{u:04d}"
        fb = rng.sample(brands, rng.choice([1, 1, 2]))
        band = rng.choice([(0, 400), (300, 900), (800, 1600), (1400, 4000)])
        cat_pref = rng.sample(list(cats), rng.choice([1, 2]))
        pool = [r for r in nonacc if r["category"] in cat_pref and band[0] <= P(r) <= band[1]]
        fav = [r for r in pool if r["brand"] in fb]
        if not pool:
            continue
        t = end - dt.timedelta(days=rng.uniform(5, 90))
        for _s in range(rng.randint(6, 25)):
            src = fav if fav and rng.random() < 0.75 else pool
            # newer models more likely
            wts = [1.6 ** (int(r["model_year"]) - 2019) for r in src]
            r = rng.choices(src, wts)[0]
            t += dt.timedelta(minutes=rng.uniform(1, 600))
            if t > end:
                break
            ev.append((uid, r["item_id"], "view", t))
            if rng.random() < 0.3:
                ev.append((uid, r["item_id"], "cart", t + dt.timedelta(seconds=30)))
            if rng.random() < 0.12:
                ev.append((uid, r["item_id"], "purchase", t + dt.timedelta(seconds=60)))
                if r["category"] == "phones":
                    for a in rng.sample(acc, rng.randint(1, 3)):
                        t2 = t + dt.timedelta(minutes=rng.uniform(2, 30))
                        ev.append((uid, a["item_id"], "view", t2))
                        if rng.random() < 0.6:
                            ev.append(
                                (uid, a["item_id"], "purchase", t2 + dt.timedelta(seconds=40))
                            )
    W = {"view": 1, "cart": 4, "purchase": 8}
    with open(f"{out}/interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "event", "weight", "timestamp"])
        for uid, i, e, t in ev:
            w.writerow([uid, i, e, W[e], t.strftime("%Y-%m-%dT%H:%M:%SZ")])
    say(len(items), "items", len(ev), "events")
    say(Counter(r["category"] for r in items))


def books(out: str) -> None:
    rng = random.Random(7)
    FIRST = [
        "Anna",
        "Ben",
        "Clara",
        "David",
        "Elena",
        "Felix",
        "Greta",
        "Hugo",
        "Iris",
        "Jonas",
        "Karin",
        "Lukas",
        "Marie",
        "Nils",
        "Olga",
        "Paul",
        "Quinn",
        "Rosa",
        "Stefan",
        "Tara",
        "Ulrich",
        "Vera",
        "Werner",
        "Xavier",
        "Yara",
        "Zoe",
        "Amelie",
        "Bruno",
        "Chloe",
        "Dmitri",
        "Emile",
        "Fanny",
        "Gilles",
        "Helene",
        "Ingrid",
        "Jules",
        "Klaus",
        "Lena",
        "Mathis",
        "Nora",
    ]
    LAST = [
        "Adler",
        "Baumann",
        "Carter",
        "Dubois",
        "Eriksen",
        "Fontaine",
        "Gruber",
        "Hartmann",
        "Ivanova",
        "Jansen",
        "Keller",
        "Lambert",
        "Moreau",
        "Neumann",
        "Olsen",
        "Petit",
        "Quint",
        "Richter",
        "Schmid",
        "Thompson",
        "Urban",
        "Vogel",
        "Walker",
        "Xu",
        "Young",
        "Zimmermann",
        "Abbott",
        "Blanc",
        "Crane",
        "Delacroix",
        "Ellis",
        "Fischer",
        "Girard",
        "Hoffmann",
        "Irving",
        "Jourdan",
        "Krause",
        "Laurent",
        "Mercier",
        "Novak",
    ]
    authors = set()
    while len(authors) < 600:
        authors.add(f"{rng.choice(FIRST)} {rng.choice(LAST)}")
    authors = sorted(authors)
    rng.shuffle(authors)
    GENRES = [
        "fantasy",
        "science fiction",
        "crime",
        "thriller",
        "romance",
        "historical fiction",
        "literary fiction",
        "horror",
        "biography",
        "history",
        "cookbook",
        "self-help",
    ]
    THEMES = {
        "fantasy": [
            "dragons",
            "magic",
            "prophecy",
            "exiled princes",
            "ancient ruins",
            "sword",
            "sorcery",
            "kingdom",
        ],
        "science fiction": [
            "starships",
            "artificial intelligence",
            "colonies",
            "time travel",
            "aliens",
            "space station",
            "robots",
            "first contact",
        ],
        "crime": [
            "detective",
            "murder",
            "police procedural",
            "small town",
            "corruption",
            "cold case",
            "forensics",
            "heist",
        ],
        "thriller": [
            "espionage",
            "conspiracy",
            "kidnapping",
            "chase",
            "secret agents",
            "betrayal",
            "assassin",
            "hostage",
        ],
        "romance": [
            "love",
            "second chances",
            "wedding",
            "summer",
            "small bakery",
            "rivals",
            "seaside",
            "holiday",
        ],
        "historical fiction": [
            "world war",
            "medieval court",
            "revolution",
            "empire",
            "plague",
            "ocean voyage",
            "renaissance",
            "victorian london",
        ],
        "literary fiction": [
            "family",
            "grief",
            "memory",
            "coming of age",
            "identity",
            "marriage",
            "migration",
            "friendship",
        ],
        "horror": [
            "haunted house",
            "ghosts",
            "curse",
            "monsters",
            "isolation",
            "possession",
            "cult",
            "nightmares",
        ],
        "biography": [
            "statesman",
            "scientist",
            "musician",
            "athlete",
            "artist",
            "explorer",
            "inventor",
            "childhood",
        ],
        "history": [
            "ancient rome",
            "cold war",
            "industrial revolution",
            "empires",
            "trade routes",
            "archaeology",
            "battles",
            "dynasties",
        ],
        "cookbook": [
            "baking",
            "vegetarian",
            "french cuisine",
            "quick meals",
            "bread",
            "desserts",
            "spices",
            "grilling",
        ],
        "self-help": [
            "productivity",
            "habits",
            "mindfulness",
            "leadership",
            "confidence",
            "sleep",
            "money",
            "relationships",
        ],
    }
    FILLER = [
        "the",
        "a",
        "story",
        "of",
        "and",
        "in",
        "with",
        "this",
        "novel",
        "follows",
        "readers",
        "will",
        "discover",
        "an",
        "unforgettable",
        "journey",
        "through",
        "world",
        "where",
        "nothing",
        "is",
        "as",
        "it",
        "seems",
        "book",
        "brings",
        "together",
        "vivid",
        "characters",
        "sharp",
        "prose",
        "celebrated",
        "author",
        "returns",
        "latest",
        "work",
    ]
    WORDS = [
        "shadow",
        "river",
        "crown",
        "glass",
        "winter",
        "iron",
        "silver",
        "garden",
        "night",
        "storm",
        "stone",
        "ember",
        "salt",
        "harbor",
        "lantern",
        "orchard",
        "raven",
        "tide",
        "echo",
        "mirror",
        "hollow",
        "copper",
        "thorn",
        "ash",
        "veil",
        "meadow",
        "cipher",
    ]
    NOUNS = [
        "gate",
        "house",
        "city",
        "road",
        "queen",
        "thief",
        "daughter",
        "secret",
        "letter",
        "island",
        "voyage",
        "song",
        "map",
        "key",
        "bridge",
        "tower",
        "hour",
        "promise",
        "clock",
        "kingdom",
    ]
    PUBS = [
        "Harbor Press",
        "Northlight",
        "Maison Verte",
        "Kranich Verlag",
        "Blue Quill",
        "Ostwind",
        "Editions du Lac",
        "Penrose & Hale",
        "Silberfeder",
        "Atlas House",
    ]
    FORMATS = {"hardcover": 1.0, "paperback": 0.55, "ebook": 0.4}
    random.Random(11)
    # author profiles
    aprof = {}
    for a in authors:
        aprof[a] = dict(
            genre=rng.choice(GENRES),
            lang=rng.choices(["en", "de", "fr"], [0.6, 0.25, 0.15])[0],
            pub=rng.choice(PUBS),
        )
    # works per author: Zipf-ish
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(authors))]
    works = []
    wid = 0

    def title():
        return f"The {rng.choice(WORDS).title()} {rng.choice(NOUNS).title()}"

    def desc(genre, theme_list):
        n = rng.randint(40, 120)
        out = []
        th = rng.sample(THEMES[genre], 3)
        theme_list.extend(th)
        while len(out) < n:
            out.append(rng.choice(FILLER) if rng.random() < 0.8 else rng.choice(th))
        return " ".join(out).capitalize() + "."

    # allocate 1300 works
    alloc = {a: 1 for a in authors}  # every author at least one
    extra = 1300 - len(authors)
    for a in rng.choices(authors, weights, k=extra):
        alloc[a] += 1
    series_id = 0
    start = dt.date(2005, 1, 1)
    for a in authors:
        p = aprof[a]
        n = alloc[a]
        # prolific authors put works into series
        i = 0
        while i < n:
            if n - i >= 3 and rng.random() < 0.6:
                L = min(n - i, rng.randint(3, 6))
                series_id += 1
                word = rng.choice(WORDS).title()  # then the kind: the seed's order
                kind = rng.choice(["Chronicles", "Cycle", "Saga", "Trilogy", "Mysteries", "Files"])
                sname = f"The {word} {kind}"
                base = start + dt.timedelta(days=rng.randint(0, 7000))
                for v in range(1, L + 1):
                    works.append(
                        dict(
                            work=f"w{wid:05d}",
                            author=a,
                            series=sname,
                            vol=v,
                            t=f"{sname}, Book {v}: {title()}",
                            date=base + dt.timedelta(days=365 * (v - 1) + rng.randint(0, 90)),
                            **p,
                        )
                    )
                    wid += 1
                i += L
            else:
                works.append(
                    dict(
                        work=f"w{wid:05d}",
                        author=a,
                        series="",
                        vol=None,
                        t=title(),
                        date=start + dt.timedelta(days=rng.randint(0, 7600)),
                        **p,
                    )
                )
                wid += 1
                i += 1
    LAST_EVENT = dt.date(2026, 10, 31)
    # ~150 new items: new works by known (prolific) authors incl next volumes, published 2026-11-10
    top = authors[:60]
    new_works = []
    for a in top:
        p = aprof[a]
        ser = [w for w in works if w["author"] == a and w["series"]]
        if ser and rng.random() < 0.7:
            s = max(ser, key=lambda w: (w["series"], w["vol"]))
            sname = s["series"]
            v = max(w["vol"] for w in ser if w["series"] == sname) + 1
            new_works.append(
                dict(
                    work=f"w{wid:05d}",
                    author=a,
                    series=sname,
                    vol=v,
                    t=f"{sname}, Book {v}: {title()}",
                    date=dt.date(2026, 11, 10),
                    **p,
                )
            )
            wid += 1
        else:
            new_works.append(
                dict(
                    work=f"w{wid:05d}",
                    author=a,
                    series="",
                    vol=None,
                    t=title(),
                    date=dt.date(2026, 11, 10),
                    **p,
                )
            )
            wid += 1
    # make older works' dates < 2026-10
    for w in works:
        if w["date"] > dt.date(2026, 6, 1):
            w["date"] = dt.date(2026, 6, 1) - dt.timedelta(days=rng.randint(0, 2000))
    items = []
    isbn = 9780000000000
    work_items = {}
    for w in works + new_works:
        themes = []
        d = desc(w["genre"], themes)
        fmts = ["hardcover", "paperback", "ebook"]
        k = rng.choice([1, 2, 2, 3, 3])
        chosen = rng.sample(fmts, k)
        for f in chosen:
            isbn += rng.randint(1, 97)
            price = round(24.0 * FORMATS[f] * rng.uniform(0.8, 1.3), 2)
            it = dict(
                item_id=f"isbn-{isbn}",
                title=w["t"],
                author=w["author"],
                series=w["series"],
                series_volume=("" if w["vol"] is None else w["vol"]),
                publisher=w["pub"],
                language=w["lang"],
                genre=w["genre"],
                published=w["date"].isoformat(),
                price=price,
                format=f,
                work_id=w["work"],
                description=d,
            )
            items.append(it)
            work_items.setdefault(w["work"], []).append(it)
    new_ids = {i["item_id"] for w in new_works for i in work_items[w["work"]]}
    say(
        "works",
        len(works),
        "new works",
        len(new_works),
        "items",
        len(items),
        "new items",
        len(new_ids),
    )
    with open(f"{out}/items.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(items[0].keys()))
        wr.writeheader()
        wr.writerows(items)
    # users: follow 1-3 authors weighted by popularity; read series in order
    old_by_author = {}
    for w in works:
        old_by_author.setdefault(w["author"], []).append(w)
    users = []
    events = []
    t0 = dt.datetime(2025, 11, 1)
    N_USERS = 2200
    for u in range(N_USERS):
        uid = f"reader-{u:05d}"
        favs = rng.choices(authors, weights, k=rng.randint(1, 3))
        pref_fmt = rng.choice(["hardcover", "paperback", "ebook"])
        t = t0 + dt.timedelta(days=rng.uniform(0, 300))
        budget = rng.randint(5, 25)
        seq = []
        for a in favs:
            ws = sorted(old_by_author[a], key=lambda w: (w["series"], w["vol"] or 0))
            # read series in order, standalone in random order
            seq.extend(ws)
        # a few random same-genre books
        g = aprof[favs[0]]["genre"]
        pool = [w for w in works if w["genre"] == g]
        seq.extend(rng.sample(pool, min(3, len(pool))))
        seq = seq[:budget]
        for w in seq:
            its = work_items[w["work"]]
            it = next((i for i in its if i["format"] == pref_fmt), rng.choice(its))
            t += dt.timedelta(hours=rng.uniform(2, 24 * 6))
            if t.date() > LAST_EVENT:
                break
            events.append((uid, it["item_id"], "view", t.isoformat(timespec="seconds")))
            if rng.random() < 0.5:
                events.append(
                    (
                        uid,
                        it["item_id"],
                        "purchase",
                        (t + dt.timedelta(minutes=5)).isoformat(timespec="seconds"),
                    )
                )
        users.append(dict(user=uid, favs=favs))
    say("events", len(events))
    with open(f"{out}/events.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["user_id", "item_id", "event", "timestamp"])
        wr.writerows(events)
    with open(f"{out}/truth.json", "w") as f:
        json.dump(dict(users=users, new=sorted(new_ids), top_authors=top), f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shop", choices=("electronics", "books"))
    parser.add_argument("--out", required=True, help="folder for the CSV files (made if missing)")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (electronics if args.shop == "electronics" else books)(args.out)


if __name__ == "__main__":
    main()
