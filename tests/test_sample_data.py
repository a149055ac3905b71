"""The bundled Japanese sample corpus in data/sample/: reproducible, well-formed, and right.

The facts are checked against expectations written here (datetime, plain arithmetic,
hand-listed anchors), not against the generator's own helpers.
"""
from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
import random
import re
from functools import lru_cache
from pathlib import Path

import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
SPLIT_FILES = {"train": "train.jsonl.gz", "valid": "valid.jsonl.gz"}
KINDS = {"place", "number", "date", "story", "dialogue", "handwritten"}
WEEKDAY_KANJI = ["月", "火", "水", "木", "金", "土", "日"]  # Monday .. Sunday


def load_generator():
    spec = importlib.util.spec_from_file_location("sample_generate", SAMPLE_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


@lru_cache(maxsize=None)
def committed_lines(split: str) -> tuple[str, ...]:
    with gzip.open(SAMPLE_DIR / SPLIT_FILES[split], "rt", encoding="utf-8") as f:
        return tuple(f.read().splitlines())


@lru_cache(maxsize=None)
def committed(split: str) -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in committed_lines(split))


def all_docs() -> list[dict]:
    return list(committed("train")) + list(committed("valid"))


def texts_of(kind: str) -> list[str]:
    return [d["text"] for d in all_docs() if d["id"].rsplit("-", 1)[0] == kind]


# ------------------------------------------------------------------ files

def test_regenerating_gives_byte_identical_files():
    for name, data in gen.build_files().items():
        assert (SAMPLE_DIR / name).read_bytes() == data, f"{name} is stale: run python data/sample/generate.py"


def test_check_flag_passes_on_committed_files_and_fails_on_other_files(tmp_path):
    assert gen.main(["--check"]) == 0
    for name in SPLIT_FILES.values():
        (tmp_path / name).write_bytes(gzip.compress(b'{"id": "x-1", "text": "x"}\n', mtime=0))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_a_different_seed_gives_different_documents():
    assert gen.build_files(seed=1) != gen.build_files()


def test_gzip_header_is_fixed():
    for name in SPLIT_FILES.values():
        header = (SAMPLE_DIR / name).read_bytes()[:10]
        assert header[:2] == b"\x1f\x8b"
        assert header[4:8] == b"\x00\x00\x00\x00", "mtime must be 0"


def test_files_are_small():
    assert sum((SAMPLE_DIR / n).stat().st_size for n in SPLIT_FILES.values()) < 1_000_000


# ------------------------------------------------------------------ shape

def test_every_line_is_a_json_document_with_text():
    for split in SPLIT_FILES:
        assert committed_lines(split), f"{split} is empty"
        for line in committed_lines(split):
            doc = json.loads(line)
            assert set(doc) == {"id", "text"}
            assert re.fullmatch(r"[a-z]+-\d{4}", doc["id"]), doc["id"]
            assert isinstance(doc["text"], str) and doc["text"].strip()
            assert "\\u" not in line, "written with ensure_ascii=False"


def test_corpus_is_large_enough():
    assert sum(len(d["text"]) for d in all_docs()) >= 300_000


def test_ids_are_unique_and_splits_share_no_id_or_text():
    train, valid = committed("train"), committed("valid")
    ids = [d["id"] for d in train + valid]
    assert len(ids) == len(set(ids))
    assert not {d["text"] for d in train} & {d["text"] for d in valid}


def test_validation_is_about_five_percent_and_covers_every_kind():
    train, valid = committed("train"), committed("valid")
    assert 0.03 <= len(valid) / (len(train) + len(valid)) <= 0.08
    for split in (train, valid):
        assert {d["id"].rsplit("-", 1)[0] for d in split} == KINDS


def test_kinds_are_mixed_in_file_order():
    kinds = [d["id"].rsplit("-", 1)[0] for d in committed("train")[:60]]
    assert len(set(kinds)) >= 4



def test_stories_have_three_to_eight_sentences():
    for text in texts_of("story"):
        assert 3 <= text.count("。") <= 8, text

def is_japanese(ch: str) -> bool:
    code = ord(ch)
    return (0x3040 <= code <= 0x309F or 0x30A0 <= code <= 0x30FF
            or 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or ch == "々")


@pytest.mark.parametrize("split", list(SPLIT_FILES))
def test_text_is_overwhelmingly_japanese(split):
    chars = [c for d in committed(split) for c in d["text"] if not c.isspace()]
    share = sum(map(is_japanese, chars)) / len(chars)
    assert share >= 0.6, f"{split}: only {share:.2f} of characters are kana or kanji"


def test_handwritten_paragraphs_are_all_included_once():
    paragraphs = gen.read_handwritten()
    assert len(paragraphs) >= 40
    for p in paragraphs:
        assert 100 <= len(p) <= 400, p[:30]
    texts = [d["text"] for d in all_docs()]
    for p in paragraphs:
        assert texts.count(p) == 1, p[:30]
    assert any(d["id"].startswith("handwritten-") for d in committed("valid"))


# ------------------------------------------------------------------ dates

WEEKDAY_RE = re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})日(?:の曜日)?は([月火水木金土日])曜日")
DAYS_AFTER_RE = re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})日の(\d+)日後は(\d{4})年(\d{1,2})月(\d{1,2})日")
WAREKI_RE = re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})日(?:は|を和暦で書くと)(令和|平成)(元|\d+)年(\d{1,2})月(\d{1,2})日")
HOLIDAY_RE = re.compile(r"(?<!\d)(\d{4})年の[^（。]+（(\d{1,2})月(\d{1,2})日）は([月火水木金土日])曜日")
DAY_OF_YEAR_RE = re.compile(r"(?<!\d)(\d{4})年(\d{1,2})月(\d{1,2})日は、その年の(\d+)日目")


def check_weekday(match) -> None:
    y, m, d, w = match.groups()
    assert WEEKDAY_KANJI[dt.date(int(y), int(m), int(d)).weekday()] == w, match.group(0)


def expected_era(day: dt.date) -> tuple[str, int]:
    if day >= dt.date(2019, 5, 1):
        return "令和", day.year - 2018
    assert day >= dt.date(1989, 1, 8)
    return "平成", day.year - 1988


def test_era_anchor_dates():
    assert gen.wareki(dt.date(1989, 1, 8)) == "平成元年1月8日"
    assert gen.wareki(dt.date(2019, 4, 30)) == "平成31年4月30日"
    assert gen.wareki(dt.date(2019, 5, 1)) == "令和元年5月1日"
    assert gen.wareki(dt.date(2024, 1, 1)) == "令和6年1月1日"


def test_weekday_facts_parse_back_to_the_right_weekday():
    rng = random.Random(7)
    for _ in range(1000):
        day, sentence = gen.weekday_fact(rng)
        match = WEEKDAY_RE.search(sentence)
        assert match, sentence
        assert dt.date(*map(int, match.groups()[:3])) == day
        check_weekday(match)


def test_calendar_sentences_in_the_corpus_are_right():
    text = "\n".join(texts_of("date") + texts_of("dialogue"))
    weekdays = list(WEEKDAY_RE.finditer(text))
    assert len(weekdays) >= 200
    for match in weekdays:
        check_weekday(match)
    holidays = list(HOLIDAY_RE.finditer(text))
    assert len(holidays) >= 50
    for match in holidays:
        check_weekday(match)
    later = list(DAYS_AFTER_RE.finditer(text))
    assert len(later) >= 50
    for match in later:
        y, m, d, n, y2, m2, d2 = map(int, match.groups())
        assert dt.date(y, m, d) + dt.timedelta(days=n) == dt.date(y2, m2, d2), match.group(0)
    ordinal = list(DAY_OF_YEAR_RE.finditer(text))
    assert len(ordinal) >= 20
    for match in ordinal:
        y, m, d, n = map(int, match.groups())
        assert (dt.date(y, m, d) - dt.date(y, 1, 1)).days + 1 == n, match.group(0)


def test_japanese_era_dates_in_the_corpus_are_right():
    matches = list(WAREKI_RE.finditer("\n".join(texts_of("date"))))
    assert len(matches) >= 100
    for match in matches:
        y, m, d, era, era_year, m2, d2 = match.groups()
        day = dt.date(int(y), int(m), int(d))
        assert (era, 1 if era_year == "元" else int(era_year)) == expected_era(day), match.group(0)
        assert (int(m2), int(d2)) == (day.month, day.day)
        assert era_year != "1", "the first year of an era is written 元年"


# ------------------------------------------------------------------ numbers

ARITHMETIC_PATTERNS = [
    (r"(\d+)たす(\d+)は(\d+)", lambda a, b: a + b),
    (r"(\d+)に(\d+)を足すと(\d+)", lambda a, b: a + b),
    (r"(\d+)と(\d+)を合わせると(\d+)", lambda a, b: a + b),
    (r"(\d+)ひく(\d+)は(\d+)", lambda a, b: a - b),
    (r"(\d+)から(\d+)を引くと(\d+)", lambda a, b: a - b),
    (r"(\d+)から(\d+)を取ると、残りは(\d+)", lambda a, b: a - b),
    (r"(\d+)かける(\d+)は(\d+)", lambda a, b: a * b),
    (r"(\d+)に(\d+)をかけると(\d+)", lambda a, b: a * b),
    (r"(\d+)の(\d+)倍は(\d+)", lambda a, b: a * b),
    (r"(\d+)わる(\d+)は(\d+)", lambda a, b: a / b),
    (r"(\d+)を(\d+)で割ると(\d+)", lambda a, b: a / b),
    (r"(\d+)を(\d+)等分すると、1つ分は(\d+)", lambda a, b: a / b),
]
ARITHMETIC_RES = [(re.compile(r"(?<!\d)" + p), f) for p, f in ARITHMETIC_PATTERNS]
REMAINDER_RE = re.compile(r"(?<!\d)(\d+)を(\d+)で割ると、商は(\d+)で余りは(\d+)")
PRICE_RE = re.compile(r"(?<!\d)1(個|本|枚|冊)(\d+)円の[^。]+?を(\d+)\1買うと、代金は(\d+)円")
CHANGE_RE = re.compile(r"代金は(\d+)円[^。]*。(\d+)円を出すと、おつりは(\d+)円")


def check_arithmetic(text: str) -> list[tuple[int, int, int]]:
    """Check every arithmetic statement in text; return the (a, b, answer) triples found."""
    found = []
    for pattern, operation in ARITHMETIC_RES:
        for match in pattern.finditer(text):
            a, b, c = map(int, match.groups())
            assert operation(a, b) == c, match.group(0)
            found.append((a, b, c))
    return found


def test_arithmetic_statements_parse_back_to_the_right_answer():
    rng = random.Random(11)
    symbols = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    for _ in range(1000):
        a, op, b, answer, sentence = gen.arithmetic_statement(rng)
        assert check_arithmetic(sentence) == [(a, b, answer)], sentence
        assert symbols[op](a, b) == answer


def test_arithmetic_and_money_in_the_corpus_are_right():
    text = "\n".join(texts_of("number"))
    assert len(check_arithmetic(text)) >= 200
    remainders = list(REMAINDER_RE.finditer(text))
    assert remainders
    for match in remainders:
        a, b, q, r = map(int, match.groups())
        assert (a // b, a % b) == (q, r) and 0 < r < b, match.group(0)
    prices = list(PRICE_RE.finditer(text))
    assert len(prices) >= 50
    for match in prices:
        _, price, count, total = match.groups()
        assert int(price) * int(count) == int(total), match.group(0)
    for match in CHANGE_RE.finditer(text):
        total, paid, change = map(int, match.groups())
        assert paid - total == change > 0, match.group(0)


def test_shop_and_restaurant_totals_add_up():
    rng = random.Random(3)
    for _ in range(100):
        _, lines = gen.shop_dialogue(rng)
        said = "".join(text for _, text in lines)
        unit_prices = [int(p) for p in re.findall(r"1[個本枚冊](\d+)円", said)]
        counts = [int(n) for n in re.findall(r"(\d+)[個本枚冊](?:ください|お願いします)", said)]
        total = int(re.search(r"全部で(\d+)円", said).group(1))
        assert sum(p * n for p, n in zip(unit_prices, counts)) == total, said
    menu = dict(gen.tables.MENU + gen.tables.DRINKS)
    for _ in range(100):
        _, lines = gen.restaurant_dialogue(rng)
        said = "".join(text for _, text in lines)
        ordered = re.search(r"すみません、([^。、]+)をお願いします", said).group(1).split("と")
        total = sum(menu[d] for d in ordered)
        drink = re.search(r"([^。、]+)を(\d)つお願いします", said)
        if drink:
            total += menu[drink.group(1)] * int(drink.group(2))
        assert int(re.search(r"お会計は(\d+)円", said).group(1)) == total, said


def test_unit_conversions_are_right():
    ratios = {("キロメートル", "メートル"): 1000, ("メートル", "センチメートル"): 100, ("センチメートル", "ミリメートル"): 10,
              ("キログラム", "グラム"): 1000, ("トン", "キログラム"): 1000, ("リットル", "ミリリットル"): 1000,
              ("時間", "分"): 60, ("分", "秒"): 60, ("日", "時間"): 24, ("週間", "日"): 7}
    units = "|".join(sorted({u for pair in ratios for u in pair}, key=len, reverse=True))
    forward = re.compile(rf"(?<![\d.])(\d+(?:\.5)?)({units})は(\d+)({units})")
    backward = re.compile(rf"(?<![\d.])(\d+)({units})を({units})で表すと(\d+(?:\.5)?)\3")
    text = "\n".join(texts_of("number"))
    found = 0
    for match in forward.finditer(text):
        x, big, y, small = match.groups()
        if (big, small) in ratios:
            assert float(x) * ratios[big, small] == int(y), match.group(0)
            found += 1
    for match in backward.finditer(text):
        y, small, big, x = match.groups()
        assert float(x) * ratios[big, small] == int(y), match.group(0)
        found += 1
    assert found >= 100


# ------------------------------------------------------------------ places

def test_prefecture_table_matches_known_facts():
    table = {p[0]: p for p in gen.tables.PREFECTURES}
    assert len(table) == 47
    known_seats = {"北海道": "札幌市", "岩手県": "盛岡市", "宮城県": "仙台市", "茨城県": "水戸市", "栃木県": "宇都宮市",
                   "群馬県": "前橋市", "神奈川県": "横浜市", "石川県": "金沢市", "山梨県": "甲府市", "愛知県": "名古屋市",
                   "三重県": "津市", "滋賀県": "大津市", "兵庫県": "神戸市", "島根県": "松江市", "香川県": "高松市",
                   "愛媛県": "松山市", "沖縄県": "那覇市", "静岡県": "静岡市", "鹿児島県": "鹿児島市"}
    for pref, seat in known_seats.items():
        assert table[pref][2] == seat
    region_sizes = {"北海道": 1, "東北": 6, "関東": 7, "中部": 9, "近畿": 7, "中国": 5, "四国": 4, "九州": 8}
    assert {r: sum(p[4] == r for p in gen.tables.PREFECTURES) for r in region_sizes} == region_sizes
    assert gen.prefecture_breakdown() == "1都1道2府43県"
    assert sorted(gen.tables.LANDLOCKED) == sorted(["栃木県", "群馬県", "埼玉県", "山梨県", "長野県", "岐阜県", "滋賀県", "奈良県"])


def test_place_sentences_in_the_corpus_agree_with_the_table():
    seat_of = {p[0]: p[2] for p in gen.tables.PREFECTURES}
    pref = "|".join(sorted(seat_of, key=len, reverse=True))
    pref_then_seat = [rf"({pref})の[都道府県]庁は([^\s、。]+?[市区])に置かれて",
                      rf"({pref})の[都道府県]庁所在地(?:である|の)([^\s、。]+?[市区])",
                      rf"問\d+：({pref})の[^\n]+\n答え：([^\s、。（]+?[市区])"]
    seat_then_pref = rf"([^\s、。：]+?[市区])は({pref})の[都道府県]庁所在地"
    text = "\n".join(texts_of("place") + texts_of("story"))
    pairs = [m.groups() for p in pref_then_seat for m in re.finditer(p, text)]
    pairs += [m.groups()[::-1] for m in re.finditer(seat_then_pref, text)]
    assert len(pairs) >= 100
    for name, seat in pairs:
        assert seat_of[name] == seat, (name, seat)
    assert seat_of["愛媛県"] == "松山市" and seat_of["滋賀県"] == "大津市"
    heights = re.findall(r"富士山（ふじさん）は[^。]+高さは(\d+)メートル", text)
    assert heights and set(heights) == {"3776"}
    assert "琵琶湖（びわこ）は滋賀県にある湖" in text
