"""The bundled chat sample in data/sample/chat/: reproducible, readable by chat.formats, polite, and right.

Facts are checked the way tests/test_sample_data.py checks the corpus (its patterns are reused): parsed back
and recomputed with datetime and plain arithmetic, or compared with values listed here by hand.
"""
import calendar
import datetime as dt
import gzip
import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from chat.formats import SourceReport, read_source
from tests.test_sample_data import (DAY_OF_YEAR_RE, DAYS_AFTER_RE, PRICE_RE, REMAINDER_RE, WAREKI_RE, WEEKDAY_RE,
                                    check_arithmetic, check_weekday, expected_era)

CHAT_DIR = Path(__file__).resolve().parents[1] / "data" / "sample" / "chat"
FILES = {"messages": "messages.jsonl.gz", "sharegpt": "sharegpt.jsonl.gz", "alpaca": "alpaca.jsonl.gz"}
POLITE_ENDINGS = ("です", "ます", "ません", "ください", "でしょう", "ましょう", "でしょうか", "ですか", "ますか")
SET_PHRASES = ("こんにちは", "どういたしまして")   # greetings: polite as they are
LANDLOCKED = {"栃木県", "群馬県", "埼玉県", "山梨県", "長野県", "岐阜県", "滋賀県", "奈良県"}
HEIGHTS = {"富士山": 3776, "北岳": 3193, "奥穂高岳": 3190, "槍ヶ岳": 3180, "御嶽山": 3067, "浅間山": 2568}
LENGTHS = {"信濃川": 367, "利根川": 322, "石狩川": 268}
UNIT_RATIOS = {("キロメートル", "メートル"): 1000, ("メートル", "センチメートル"): 100, ("センチメートル", "ミリメートル"): 10,
               ("キログラム", "グラム"): 1000, ("トン", "キログラム"): 1000, ("リットル", "ミリリットル"): 1000,
               ("時間", "分"): 60, ("分", "秒"): 60, ("日", "時間"): 24, ("週間", "日"): 7}


def load_generator():
    spec = importlib.util.spec_from_file_location("chat_sample_generate", CHAT_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


@lru_cache(maxsize=None)
def conversations(fmt):
    """The committed file of ``fmt``, read by chat.formats in that format: (messages lists, report)."""
    report = SourceReport(fmt, CHAT_DIR / FILES[fmt], fmt)
    return tuple(tuple(c.messages) for c in read_source(fmt, CHAT_DIR / FILES[fmt], fmt, report)), report


def all_conversations():
    return [messages for fmt in FILES for messages in conversations(fmt)[0]]


def turns(messages):
    body = [m for m in messages if m["role"] != "system"]
    return [(body[i]["content"], body[i + 1]["content"]) for i in range(0, len(body), 2)]


def answers():
    return [answer for messages in all_conversations() for _, answer in turns(messages)]


# ------------------------------------------------------------------ files

def test_regenerating_gives_byte_identical_files():
    for name, data in gen.build_files().items():
        assert (CHAT_DIR / name).read_bytes() == data, f"{name} is stale: run python data/sample/chat/generate.py"


def test_check_flag_passes_on_committed_files_and_fails_on_other_files(tmp_path):
    assert gen.main(["--check"]) == 0
    for name in FILES.values():
        (tmp_path / name).write_bytes(gzip.compress(b'{"id": "x-1", "instruction": "x", "output": "y"}\n', mtime=0))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_gzip_headers_are_fixed_and_a_different_seed_differs():
    for name in FILES.values():
        header = (CHAT_DIR / name).read_bytes()[:10]
        assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\x00\x00\x00\x00", "mtime must be 0"
    assert gen.build_files(seed=1) != gen.build_files()


# ------------------------------------------------------------------ shape

@pytest.mark.parametrize("fmt", list(FILES))
def test_every_row_reads_in_its_format_without_a_bad_row(fmt):
    found, report = conversations(fmt)
    with gzip.open(CHAT_DIR / FILES[fmt], "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert found and len(found) == len(lines) == report.rows
    assert dict(report.malformed) == {} and report.trailing_user_dropped == 0


def test_there_are_enough_conversations_of_every_shape():
    found = all_conversations()
    assert len(found) >= 300
    assert sum(len(turns(m)) > 1 for m in found) >= 30
    assert sum(m[0]["role"] == "system" for m in found) >= 20
    assert len({json.dumps(m, ensure_ascii=False) for m in found}) == len(found), "no conversation twice"


def test_the_hand_written_conversations_are_all_included_once():
    text = (CHAT_DIR / "handwritten.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.split("\n---\n") if "assistant:" in block]
    written = gen.read_handwritten()
    assert len(written) == len(blocks) >= 30
    firsts = [turns(m)[0][0] for m in all_conversations()]
    for conversation in written:
        assert firsts.count(conversation["turns"][0][0]) == 1, conversation["turns"][0][0]


def test_answers_are_in_the_desu_masu_style():
    for answer in answers():
        plain = re.sub(r"「[^」]*」", "「」", answer)          # quoted text keeps its own style
        assert plain.endswith("。"), answer
        for sentence in plain.split("。")[:-1]:
            assert sentence.strip().endswith(POLITE_ENDINGS) or sentence in SET_PHRASES, (sentence, answer)


# ------------------------------------------------------------------ facts

def qa_pairs():
    return [pair for messages in all_conversations() for pair in turns(messages)]


def test_prefecture_answers_agree_with_the_table_and_hand_checked_anchors():
    table = {p[0]: p for p in gen.tables.PREFECTURES}
    anchors = {"愛媛県": "松山市", "滋賀県": "大津市", "沖縄県": "那覇市", "宮城県": "仙台市", "兵庫県": "神戸市"}
    assert all(table[p][2] == seat for p, seat in anchors.items())
    prefs = "|".join(sorted(table, key=len, reverse=True))
    seat_res = [re.compile(rf"^({prefs})の[都道府県]庁所在地は(\S+?[市区])です。$"),
                re.compile(rf"^({prefs})の[都道府県]庁は(\S+?[市区])に置かれています。$")]
    checked = 0
    for question, answer in qa_pairs():
        for pattern in seat_res:
            if match := pattern.match(answer):
                assert question.startswith(match.group(1)) and table[match.group(1)][2] == match.group(2), answer
                checked += 1
        if match := re.match(rf"^({prefs})は(\S+)地方にあります。$", answer):
            assert table[match.group(1)][4] == match.group(2), answer
            checked += 1
        if match := re.match(rf"^(はい|いいえ)、({prefs})は海に面して", answer):
            assert (match.group(1) == "いいえ") == (match.group(2) in LANDLOCKED), answer
            checked += 1
    assert checked >= 60


def test_readings_and_region_lists_agree_with_the_table():
    readings = {name: reading for p in gen.tables.PREFECTURES for name, reading in ((p[0], p[1]), (p[2], p[3]))}
    regions = {r: [p[0] for p in gen.tables.PREFECTURES if p[4] == r] for r in gen.tables.REGIONS}
    checked = 0
    for answer in answers():
        for name, reading in re.findall(r"「?(\S+?[都道府県市区])」?は「(\S+?)」と読みます", answer):
            assert readings[name] == reading, answer
            checked += 1
        if match := re.match(r"^(\S+?)地方には、(\S+)の(\d+)つの", answer):
            listed = match.group(2).split("、")
            assert listed == regions[match.group(1)] and int(match.group(3)) == len(listed), answer
            checked += 1
    assert checked >= 15


def test_heights_and_lengths_agree_with_hand_listed_values():
    text = "\n".join(answers())
    heights = re.findall(r"(\S+?)の高さは(\d+)メートル", text)
    differences = re.findall(r"(\S+?)は(\S+?)より(\d+)メートル高い", text)
    lengths = re.findall(r"(\S+?)の長さは(\d+)キロメートル", text)
    assert len(heights) >= 15 and differences and lengths
    for name, height in heights:
        assert HEIGHTS[name.split("、")[-1]] == int(height), name
    for higher, lower, difference in differences:
        higher = higher.split("、")[-1]
        assert HEIGHTS[higher] - HEIGHTS[lower] == int(difference) > 0, (higher, lower)
    for name, length in lengths:
        assert LENGTHS[name] == int(length), name


def test_calendar_answers_are_right():
    text = "\n".join(answers())
    found = {name: list(pattern.finditer(text)) for name, pattern in
             {"weekday": WEEKDAY_RE, "after": DAYS_AFTER_RE, "era": WAREKI_RE, "ordinal": DAY_OF_YEAR_RE}.items()}
    assert all(len(matches) >= 5 for matches in found.values()), {k: len(v) for k, v in found.items()}
    for match in found["weekday"]:
        check_weekday(match)
    for match in found["after"]:
        y, m, d, n, y2, m2, d2 = map(int, match.groups())
        assert dt.date(y, m, d) + dt.timedelta(days=n) == dt.date(y2, m2, d2), match.group(0)
    for match in found["era"]:
        y, m, d, era, era_year, m2, d2 = match.groups()
        day = dt.date(int(y), int(m), int(d))
        assert (era, 1 if era_year == "元" else int(era_year)) == expected_era(day), match.group(0)
        assert (int(m2), int(d2)) == (day.month, day.day), match.group(0)
    for match in found["ordinal"]:
        y, m, d, n = map(int, match.groups())
        assert (dt.date(y, m, d) - dt.date(y, 1, 1)).days + 1 == n, match.group(0)
    leap = re.findall(r"(\d{4})年はうるう年(で、|ではない)", text)
    assert len(leap) >= 5
    for year, verdict in leap:
        y = int(year)
        assert (verdict == "で、") == (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) == calendar.isleap(y)


def test_arithmetic_money_units_and_primes_are_right():
    text = "\n".join(answers())
    assert len(check_arithmetic(text)) >= 50
    for match in REMAINDER_RE.finditer(text):
        a, b, q, r = map(int, match.groups())
        assert (a // b, a % b) == (q, r), match.group(0)
    prices = list(PRICE_RE.finditer(text))
    assert len(prices) >= 20
    for match in prices:
        assert int(match.group(2)) * int(match.group(3)) == int(match.group(4)), match.group(0)
    for total, paid, change in re.findall(r"代金は(\d+)円なので、(\d+)円を出すと、おつりは(\d+)円", text):
        assert int(paid) - int(total) == int(change) > 0
    units = "|".join(sorted({u for pair in UNIT_RATIOS for u in pair}, key=len, reverse=True))
    conversions = re.findall(rf"(?<![\d.])(\d+(?:\.5)?)({units})は(\d+)({units})", text)
    assert len(conversions) >= 30
    for amount, big, converted, small in conversions:
        if (big, small) not in UNIT_RATIOS:
            continue  # "1時間30分は90分": a sum of units, checked by hand
        assert float(amount) * UNIT_RATIOS[big, small] == int(converted), (amount, big, converted, small)
    primes = re.findall(r"はい、(\d+)は1と\1でしか割り切れないので、素数です", text)
    composites = re.findall(r"いいえ、(\d+)は(\d+)で割り切れるので、素数ではありません", text)
    assert primes and composites
    for n in map(int, primes):
        assert all(n % d for d in range(2, n))
    for n, d in composites:
        assert 1 < int(d) < int(n) and int(n) % int(d) == 0


def test_a_follow_up_sum_starts_from_the_previous_answer():
    checked = 0
    for messages in all_conversations():
        pairs = turns(messages)
        for (_, before), (question, answer) in zip(pairs, pairs[1:]):
            if question.startswith("では、その答えに"):
                previous = re.findall(r"\d+", before)[-1]
                assert answer.startswith(previous + "に"), (before, answer)
                checked += 1
    assert checked >= 3
