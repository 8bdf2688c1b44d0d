"""A shop whose titles are in five languages and scripts (Chinese, Japanese, Arabic, Russian,
German), to check that the product learns from titles in any script; and title-only
same-category precision@10 of two ways of splitting titles into words, side by side.

    .venv/bin/python scripts/languages_shop.py prepare --out DIR [--variant native|ascii|zhspace]
    .venv/bin/python scripts/languages_shop.py titles DIR

``prepare`` writes items.csv (item_id, title, price, brand), interactions.csv (two months of
views, clicks, carts and purchases before 2026-10-01), next_week.csv (the week after, new
items included), labels.csv (each item's category, language and whether it is new) and
shoppers.csv. 3,000 items in 30 categories, 10% of them new; 1,500 shoppers who each favour
one or two categories and mostly one language. A title names the brand, a marketing word, a
colour and the category, in the language's own order; Chinese and Japanese titles are
written without spaces between words (``native``), with spaces (``zhspace``), or every word
is replaced by an ASCII token (``ascii``: the same structure in Latin letters). Then, as any
shop: ``recsys ingest items/interactions``, ``recsys train``, ``recsys evaluate --split
time-cutoff --cutoff 2026-10-01`` (with next_week.csv ingested too).

``titles`` scores, per language, the same-category precision@10 of each item's 10 nearest
titles (cosine of sublinear TF-IDF, as the tabular encoder weighs a text column) with
scikit-learn's default words and with ``recsys.text``'s.

Written from a walkthrough's generator (session 58, a shop tester's); categories, colours
and brands are made-up examples, and the words mean what the first column says.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

# 30 categories: zh, ja, ar, ru, de, en
CATS = [
    ("连衣裙", "ワンピース", "فستان", "платье", "Kleid", "dress"),
    ("运动鞋", "スニーカー", "حذاء رياضي", "кроссовки", "Turnschuhe", "sneakers"),
    ("牛仔裤", "ジーンズ", "جينز", "джинсы", "Jeans", "jeans"),
    ("羽绒服", "ダウンジャケット", "سترة منفوخة", "пуховик", "Daunenjacke", "down jacket"),
    ("双肩包", "リュックサック", "حقيبة ظهر", "рюкзак", "Rucksack", "backpack"),
    ("手提包", "ハンドバッグ", "حقيبة يد", "сумочка", "Handtasche", "handbag"),
    ("衬衫", "シャツ", "قميص", "рубашка", "Hemd", "shirt"),
    ("毛衣", "セーター", "كنزة", "свитер", "Pullover", "sweater"),
    ("短裤", "ショートパンツ", "شورت", "шорты", "Shorts", "shorts"),
    ("半身裙", "スカート", "تنورة", "юбка", "Rock", "skirt"),
    ("高跟鞋", "ハイヒール", "كعب عال", "туфли на каблуке", "Pumps", "heels"),
    ("靴子", "ブーツ", "حذاء برقبة", "ботинки", "Stiefel", "boots"),
    ("帽子", "キャップ", "قبعة", "кепка", "Mütze", "cap"),
    ("围巾", "マフラー", "وشاح", "шарф", "Schal", "scarf"),
    ("手表", "腕時計", "ساعة يد", "наручные часы", "Armbanduhr", "watch"),
    ("太阳镜", "サングラス", "نظارة شمسية", "солнцезащитные очки", "Sonnenbrille", "sunglasses"),
    ("钱包", "財布", "محفظة", "кошелёк", "Geldbörse", "wallet"),
    ("皮带", "ベルト", "حزام", "ремень", "Gürtel", "belt"),
    ("袜子", "靴下", "جوارب", "носки", "Socken", "socks"),
    ("睡衣", "パジャマ", "بيجامة", "пижама", "Schlafanzug", "pyjamas"),
    ("泳衣", "水着", "ملابس سباحة", "купальник", "Badeanzug", "swimsuit"),
    ("西装", "スーツ", "بدلة", "костюм", "Anzug", "suit"),
    ("卫衣", "パーカー", "هودي", "худи", "Kapuzenpullover", "hoodie"),
    ("T恤", "Tシャツ", "تيشيرت", "футболка", "T-Shirt", "t-shirt"),
    ("拖鞋", "スリッパ", "شبشب", "тапочки", "Hausschuhe", "slippers"),
    ("手套", "手袋", "قفازات", "перчатки", "Handschuhe", "gloves"),
    ("耳环", "イヤリング", "أقراط", "серьги", "Ohrringe", "earrings"),
    ("项链", "ネックレス", "قلادة", "ожерелье", "Halskette", "necklace"),
    ("行李箱", "スーツケース", "حقيبة سفر", "чемодан", "Koffer", "suitcase"),
    ("雨伞", "傘", "مظلة", "зонт", "Regenschirm", "umbrella"),
]
COLOURS = [
    ("红色", "赤い", "أحمر", "красный", "rot", "red"),
    ("黑色", "黒い", "أسود", "чёрный", "schwarz", "black"),
    ("白色", "白い", "أبيض", "белый", "weiß", "white"),
    ("蓝色", "青い", "أزرق", "синий", "blau", "blue"),
    ("绿色", "緑の", "أخضر", "зелёный", "grün", "green"),
    ("灰色", "グレーの", "رمادي", "серый", "grau", "grey"),
    ("粉色", "ピンクの", "وردي", "розовый", "rosa", "pink"),
    ("黄色", "黄色い", "أصفر", "жёлтый", "gelb", "yellow"),
]
MODS = [  # marketing words, uninformative
    ("新款", "新作", "جديد", "новинка", "neu", "new"),
    ("夏季", "夏用", "صيفي", "летний", "Sommer", "summer"),
    ("冬季", "冬用", "شتوي", "зимний", "Winter", "winter"),
    ("时尚", "おしゃれ", "عصري", "модный", "modisch", "trendy"),
    ("经典", "定番", "كلاسيكي", "классический", "klassisch", "classic"),
    ("正品", "正規品", "أصلي", "оригинал", "Original", "genuine"),
]
LANGS = ["zh", "ja", "ar", "ru", "de"]
BRANDS = {
    "zh": [
        "李宁",
        "安踏",
        "波司登",
        "太平鸟",
        "森马",
        "美特斯邦威",
        "江南布衣",
        "特步",
        "回力",
        "以纯",
        "海澜之家",
        "鸿星尔克",
    ],
    "ja": [
        "ユニクロ",
        "無印良品",
        "アシックス",
        "ビームス",
        "コム・デ・ギャルソン",
        "イッセイ",
        "ミズノ",
        "オニツカ",
        "しまむら",
        "ワークマン",
        "カシオ",
        "セイコー",
    ],
    "ar": [
        "الأناقة",
        "نجمة",
        "الريم",
        "سما",
        "دانة",
        "لمسة",
        "الواحة",
        "نسيم",
        "غزال",
        "ياسمين",
        "قمر",
        "الفخامة",
    ],
    "ru": [
        "Глория Джинс",
        "Zarina",
        "Снежная Королева",
        "Спортмастер",
        "Befree",
        "Финн Флаер",
        "Остин",
        "Love Republic",
        "Савage",
        "Лента",
        "Твое",
        "Henderson",
    ],
    "de": [
        "Schöffel",
        "Jack Wolfskin",
        "Müller & Söhne",
        "Größenwahn",
        "Bäumler",
        "Hämmerle",
        "Löwenherz",
        "Straßenkind",
        "Brühl",
        "Käthe Kruse",
        "Jägermeister Moden",
        "Fürstenberg",
    ],
}


N_ITEMS, N_USERS, NEW_SHARE = 3000, 1500, 0.1
EVENTS = [("view", 1), ("click", 2), ("cart", 4), ("purchase", 8)]
START, CUTOFF = datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)


def _ascii(word: str, lang: str) -> str:
    """A stable ASCII stand-in for a native word (spaces kept as word breaks)."""
    return " ".join(
        f"{lang}{hashlib.md5(f'{lang}:{p}'.encode()).hexdigest()[:5]}" for p in word.split()
    )


class Shop:
    """The generator: one seeded draw of items, shoppers and their events."""

    def __init__(self, variant: str, seed: int):
        self.variant, self.rng = variant, np.random.default_rng(seed)

    def word(self, row: tuple, lang: str) -> str:
        native = row[LANGS.index(lang)]
        return _ascii(native, lang) if self.variant == "ascii" else native

    def title(self, lang: str, brand: str, cat: int, colour: int, mod: int) -> str:
        b = _ascii(brand, lang) if self.variant == "ascii" else brand
        c, k = self.word(CATS[cat], lang), self.word(COLOURS[colour], lang)
        m = self.word(MODS[mod], lang)
        if lang == "zh":
            return f"{b} {m}{k}{c}" if self.variant == "native" else " ".join([b, m, k, c])
        if lang == "ja":
            return f"{b} {k}{c}{m}" if self.variant == "native" else " ".join([b, k, c, m])
        if lang == "ar":
            return f"{c} {k} {m} - {b}"
        if lang == "ru":
            return f"{b} {c} {m} {k}"
        return f"{b} {c} {k} {m}"

    def items(self) -> list[dict]:
        rng = self.rng
        sells = {
            (lang, b): rng.choice(30, 6, replace=False) for lang in LANGS for b in BRANDS[lang]
        }
        items = []
        for i in range(N_ITEMS):
            lang, cat = LANGS[i % 5], int(rng.integers(30))
            brands = [b for b in BRANDS[lang] if cat in sells[(lang, b)]] or BRANDS[lang]
            brand = brands[rng.integers(len(brands))]
            colour, mod = int(rng.integers(len(COLOURS))), int(rng.integers(len(MODS)))
            price = round(float(np.exp(rng.normal(3.5 + 0.03 * cat, 0.4))), 2)
            shown = _ascii(brand, lang) if self.variant == "ascii" else brand
            title = self.title(lang, brand, cat, colour, mod)
            items.append({"item_id": f"sku-{i:05d}", "lang": lang, "cat": cat, "brand": brand,
                          "title": title, "price": price, "brand_attr": shown})  # fmt: skip
        return items

    def events(self, shoppers, pools, start, end, per_user, fallback, weights) -> list[tuple]:
        rng, rows = self.rng, []
        for shopper in shoppers:
            for _ in range(max(1, int(rng.poisson(per_user)))):
                item = None
                if rng.random() < 0.85:
                    cat = shopper["cats"][rng.integers(len(shopper["cats"]))]
                    lang = shopper["lang"] if rng.random() < 0.7 else LANGS[rng.integers(5)]
                    pool = pools.get((cat, lang))
                    item = pool[rng.integers(len(pool))] if pool else None
                if item is None:
                    at = (
                        rng.choice(len(fallback), p=weights)
                        if weights is not None
                        else rng.integers(len(fallback))
                    )
                    item = fallback[at]
                when = start + timedelta(
                    seconds=float(rng.uniform(0, (end - start).total_seconds()))
                )
                for event, weight in EVENTS:
                    if event != "view" and rng.random() > 0.35:
                        break
                    stamp = (when + timedelta(seconds=30 * weight)).strftime("%Y-%m-%dT%H:%M:%SZ")
                    rows.append((shopper["user_id"], item["item_id"], event, weight, stamp))
        return rows


def _write(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def prepare(out: Path, variant: str, seed: int) -> None:
    shop = Shop(variant, seed)
    rng, items = shop.rng, shop.items()
    old, new = items[: int(N_ITEMS * (1 - NEW_SHARE))], items[int(N_ITEMS * (1 - NEW_SHARE)) :]
    pools_old, pools_new = defaultdict(list), defaultdict(list)
    for item in old:
        pools_old[(item["cat"], item["lang"])].append(item)
    for item in new:
        pools_new[(item["cat"], item["lang"])].append(item)
    shoppers = []
    for u in range(N_USERS):  # one or two favourite categories, mostly one language
        cats = list(rng.choice(30, int(rng.integers(1, 3)), replace=False))
        shoppers.append({"user_id": f"user-{u:05d}", "cats": cats, "lang": LANGS[rng.integers(5)]})
    popular = np.array([1.0 / (1 + rank) ** 0.6 for rank in range(len(old))])
    popular = popular[rng.permutation(len(old))]
    popular /= popular.sum()
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "items.csv", ["item_id", "title", "price", "brand"],
           [(i["item_id"], i["title"], i["price"], i["brand_attr"]) for i in items])  # fmt: skip
    _write(out / "labels.csv", ["item_id", "category", "lang", "new", "brand"],
           [(i["item_id"], CATS[i["cat"]][5], i["lang"], int(n >= len(old)), i["brand"])
            for n, i in enumerate(items)])  # fmt: skip
    header = ["user_id", "item_id", "event", "weight", "timestamp"]
    before = shop.events(shoppers, pools_old, START, CUTOFF, 14, old, popular)
    _write(out / "interactions.csv", header, before)
    both = {
        key: pools_old.get(key, []) + pools_new.get(key, []) * 3
        for key in set(pools_old) | set(pools_new)
    }
    after = shop.events(shoppers, both, CUTOFF, CUTOFF + timedelta(days=7), 2, old, popular)
    _write(out / "next_week.csv", header, after)
    favourites = [
        (s["user_id"], "|".join(CATS[c][5] for c in s["cats"]), s["lang"]) for s in shoppers
    ]
    _write(out / "shoppers.csv", ["user_id", "cats", "lang"], favourites)
    print(f"{variant}: {len(items)} items, {len(before)} events, {len(after)} the week after")


def titles(folder: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    from recsys.text import analyzer

    with open(folder / "items.csv", encoding="utf-8") as file:
        items = list(csv.DictReader(file))
    with open(folder / "labels.csv", encoding="utf-8") as file:
        labels = {row["item_id"]: row for row in csv.DictReader(file)}
    category = np.array([labels[i["item_id"]]["category"] for i in items])
    language = np.array([labels[i["item_id"]]["lang"] for i in items])
    texts = [i["title"] for i in items]
    for name, words in (("scikit-learn's words", "word"), ("recsys.text's words", analyzer())):
        vectors = normalize(TfidfVectorizer(sublinear_tf=True, analyzer=words).fit_transform(texts))
        cosine = (vectors @ vectors.T).toarray()
        np.fill_diagonal(cosine, -np.inf)
        nearest = np.argsort(-cosine, axis=1, kind="stable")[:, :10]
        precision = (category[nearest] == category[:, None]).mean(axis=1)
        shares = "  ".join(f"{lang} {precision[language == lang].mean():.3f}" for lang in LANGS)
        print(f"{name:22} all {precision.mean():.3f}  {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("prepare", help="write the shop's files")
    made.add_argument("--out", type=Path, required=True)
    made.add_argument("--variant", choices=("native", "ascii", "zhspace"), default="native")
    made.add_argument("--seed", type=int, default=7)
    scored = commands.add_parser("titles", help="title-only same-category precision@10")
    scored.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.variant, args.seed)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        titles(args.folder)


if __name__ == "__main__":
    main()
