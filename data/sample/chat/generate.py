#!/usr/bin/env python3
"""Build tsubame's bundled Japanese chat sample: data/sample/chat/{messages,sharegpt,alpaca}.jsonl.gz.

Questions and answers about prefectures, mountains and rivers, arithmetic, prices, units and the calendar are
made from the facts in ../tables.py and the helpers of ../generate.py (imported, not copied); every number and
date in an answer is computed. The conversations in handwritten.txt are added as they are. Answers are in the
です/ます style throughout. The output depends only on --seed, which makes the committed files checkable.

    python data/sample/chat/generate.py            # rewrite the three files next to this script
    python data/sample/chat/generate.py --check    # exit 1 if the committed files are stale
"""
from __future__ import annotations

import calendar
import datetime as dt
import importlib.util
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HANDWRITTEN_PATH = HERE / "handwritten.txt"
DEFAULT_SEED = 20240801
FILES = {"messages": "messages.jsonl.gz", "sharegpt": "sharegpt.jsonl.gz", "alpaca": "alpaca.jsonl.gz"}
PER_KIND = {"seat": 70, "region": 16, "nature": 44, "arithmetic": 70, "price": 40, "units": 36, "calendar": 70,
            "number": 30}
FOLLOW_UP = 0.35          # chance of each further turn in a conversation that has follow-ups
SYSTEM_CHANCE = 0.25
SYSTEMS = {
    "place": "あなたは日本の地理にくわしいアシスタントです。質問には短く、です・ます調で答えてください。",
    "math": "あなたは算数の先生です。答えは短く、です・ます調で書いてください。",
    "calendar": "あなたはカレンダーにくわしいアシスタントです。日付や曜日の質問に、です・ます調で正確に答えてください。",
}


def load_module(name: str, path: Path):
    """A module loaded by path: data/ is not a package (see ../generate.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = load_module("tsubame_sample_generate", HERE.parent / "generate.py")
tables = corpus.tables


def conversation(turns: list[tuple[str, str]], system: str | None = None, alpaca: tuple[str, str] | None = None):
    """One conversation: (question, answer) turns, an optional system message, and for a single question that
    Alpaca can hold as instruction + input, those two parts (the question is then instruction + blank line + input)."""
    return {"system": system, "turns": turns, "alpaca": alpaca}


def follow_ups(rng: random.Random, first: tuple[str, str], more: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first turn, then each further turn in order while a coin with FOLLOW_UP heads keeps coming up."""
    turns = [first]
    for turn in more:
        if rng.random() >= FOLLOW_UP:
            break
        turns.append(turn)
    return turns


# ================================================================ places
def seat_conversation(rng: random.Random) -> dict:
    name, reading, seat, seat_reading, region = rng.choice(tables.PREFECTURES)
    office = corpus.office_of(name)
    first = rng.choice([(f"{name}の{office}所在地はどこですか。", f"{name}の{office}所在地は{seat}です。"),
                        (f"{name}の{office}はどこにありますか。", f"{name}の{office}は{seat}に置かれています。")])
    landlocked = name in tables.LANDLOCKED
    more = [("その読み方も教えてください。", f"{seat}は「{seat_reading}」と読みます。"),
            (f"{name}は何地方にありますか。", f"{name}は{region}地方にあります。"),
            (f"{name}は海に面していますか。",
             f"いいえ、{name}は海に面していない内陸の{name[-1]}です。" if landlocked else f"はい、{name}は海に面しています。")]
    rng.shuffle(more)
    if rng.random() < 0.2:
        return conversation([(f"「{name}」は何と読みますか。", f"「{name}」は「{reading}」と読みます。")])
    return conversation(follow_ups(rng, first, more))


def region_conversation(rng: random.Random) -> dict:
    region = rng.choice(tables.REGIONS)
    prefs = corpus.prefectures_in(region)
    question = rng.choice([f"{region}地方にはどんな都道府県がありますか。", f"{region}地方の都道府県を教えてください。"])
    if len(prefs) == 1:
        return conversation([(question, "北海道地方は、北海道だけからなる地方です。")])
    names = corpus.join_ja(p[0] for p in prefs)
    answer = f"{region}地方には、{names}の{len(prefs)}つの{corpus.regional_unit(prefs)}があります。"
    inland = [p[0] for p in prefs if p[0] in tables.LANDLOCKED]
    more = [("そのうち、海に面していないのはどこですか。",
             f"{region}地方で海に面していないのは、{corpus.join_ja(inland)}です。" if inland
             else f"{region}地方の{corpus.regional_unit(prefs)}は、どれも海に面しています。")]
    return conversation(follow_ups(rng, (question, answer), more))


def nature_conversation(rng: random.Random) -> dict:
    if rng.random() < 0.3:
        name, reading, length, _, _ = rng.choice([r for r in tables.RIVERS if r[2]])
        return conversation([(f"{name}の長さは何キロメートルですか。", f"{name}の長さは{length}キロメートルです。")])
    if rng.random() < 0.2:
        lake, reading, where, _ = rng.choice(tables.LAKES)
        return conversation([(f"{lake}はどこにありますか。", f"{lake}は{where}にあります。"),
                             ("読み方も教えてください。", f"{lake}は「{reading}」と読みます。")][:rng.randint(1, 2)])
    (name, reading, height, where, _), other = rng.sample([m for m in tables.MOUNTAINS if m[2]], 2)
    higher, lower = sorted([(name, height), (other[0], other[2])], key=lambda m: -m[1])
    first = (f"{name}の高さは何メートルですか。", f"{name}の高さは{height}メートルです。")
    more = [(f"では、{other[0]}とくらべると、どちらが高いですか。",
             f"{higher[0]}のほうが高く、{higher[0]}は{lower[0]}より{higher[1] - lower[1]}メートル高いです。"),
            (f"{name}はどこにありますか。", f"{name}は{where}にあります。")]
    return conversation(follow_ups(rng, first, more))


# ================================================================ numbers
OPERATION_WORDS = {"+": "たす", "-": "ひく", "*": "かける", "/": "わる"}


def arithmetic_conversation(rng: random.Random) -> dict:
    if rng.random() < 0.2:
        b = rng.randint(3, 9)
        a = b * rng.randint(2, 15) + rng.randint(1, b - 1)
        return conversation([(f"{a}を{b}で割ると、商と余りはいくつですか。", f"{a}を{b}で割ると、商は{a // b}で余りは{a % b}です。")])
    a, op, b, c, answer = corpus.arithmetic_statement(rng, "desu")
    expression = f"{a}{OPERATION_WORDS[op]}{b}"
    if rng.random() < 0.4:
        return conversation([(f"次の計算をしてください。\n\n{expression}", answer)], alpaca=("次の計算をしてください。", expression))
    d = rng.randint(1, 50)
    more = [(f"では、その答えに{d}を足すといくつですか。", f"{c}に{d}を足すと{c + d}になります。")]
    return conversation(follow_ups(rng, (f"{expression}はいくつですか。", answer), more))


def price_conversation(rng: random.Random) -> dict:
    thing, k, prices = rng.choice(tables.PRICED_ITEMS)
    price, n = rng.choice(prices), rng.randint(2, 9)
    total = price * n
    paid = corpus.amount_paid(total)
    first = (f"1{k}{price}円の{thing}を{n}{k}買うと、代金はいくらですか。", f"1{k}{price}円の{thing}を{n}{k}買うと、代金は{total}円です。")
    if paid == total:
        return conversation([first])
    return conversation(follow_ups(rng, first, [(f"{paid}円を出すと、おつりはいくらですか。",
                                                 f"代金は{total}円なので、{paid}円を出すと、おつりは{paid - total}円です。")]))


def units_conversation(rng: random.Random) -> dict:
    big, small, ratio = rng.choice(tables.UNIT_RATIOS)
    amount = rng.randint(1, 12)
    if rng.random() < 0.5:
        return conversation([(f"{amount}{big}は何{small}ですか。", f"{amount}{big}は{amount * ratio}{small}です。")])
    instruction = f"次の量を{small}で表してください。"
    return conversation([(f"{instruction}\n\n{amount}{big}", f"{amount}{big}は{amount * ratio}{small}です。")],
                        alpaca=(instruction, f"{amount}{big}"))


def number_conversation(rng: random.Random) -> dict:
    n = rng.randint(2, 120)
    if corpus.is_prime(n):
        answer = f"はい、{n}は1と{n}でしか割り切れないので、素数です。"
    else:
        answer = f"いいえ、{n}は{min(d for d in range(2, n) if n % d == 0)}で割り切れるので、素数ではありません。"
    more = [(f"{n}は偶数ですか、奇数ですか。", f"{n}は{'偶数' if n % 2 == 0 else '奇数'}です。")]
    return conversation(follow_ups(rng, (f"{n}は素数ですか。", answer), more))


# ================================================================ calendar
def calendar_conversation(rng: random.Random) -> dict:
    shape = rng.choice(["weekday", "weekday", "leap", "day_of_year"])
    if shape == "leap":
        year = rng.randint(1990, 2040)
        answer = (f"はい、{year}年はうるう年で、2月は29日まであります。" if calendar.isleap(year)
                  else f"いいえ、{year}年はうるう年ではないので、2月は28日までです。")
        return conversation([(f"{year}年はうるう年ですか。", answer)])
    day = corpus.random_date(rng, first=tables.HEISEI_START)
    date = corpus.ja_date(day)
    if shape == "day_of_year":
        n = day.timetuple().tm_yday
        return conversation([(f"{date}はその年の何日目ですか。", f"{date}は、その年の{n}日目です。")])
    n = rng.randint(1, 400)
    later = day + dt.timedelta(days=n)
    more = [(f"その{n}日後は何年何月何日ですか。", f"{date}の{n}日後は{corpus.ja_date(later)}です。"),
            ("和暦で書くとどうなりますか。", f"{date}を和暦で書くと{corpus.wareki(day)}になります。")]
    rng.shuffle(more)
    first = (f"{date}は何曜日ですか。", f"{date}は{tables.WEEKDAYS[day.weekday()]}曜日です。")
    return conversation(follow_ups(rng, first, more))


BUILDERS = {"seat": (seat_conversation, "place"), "region": (region_conversation, "place"),
            "nature": (nature_conversation, "place"), "arithmetic": (arithmetic_conversation, "math"),
            "price": (price_conversation, "math"), "units": (units_conversation, "math"),
            "calendar": (calendar_conversation, "calendar"), "number": (number_conversation, "math")}


# ================================================================ hand-written conversations
ROLE_PREFIXES = {"system:": "system", "user:": "user", "assistant:": "assistant"}


def read_handwritten(path: Path = HANDWRITTEN_PATH) -> list[dict]:
    """Conversations separated by lines of '---'; a message starts with 'system:', 'user:' or 'assistant:' and
    runs until the next one (its lines joined with newlines); lines starting with '#' are comments."""
    conversations = []
    for number, block in enumerate(path.read_text(encoding="utf-8").split("\n---\n"), start=1):
        messages = []
        for line in block.strip().splitlines():
            if line.startswith("#"):
                continue
            prefix = next((p for p in ROLE_PREFIXES if line.startswith(p)), None)
            if prefix:
                messages.append([ROLE_PREFIXES[prefix], line[len(prefix):].strip()])
            elif messages:
                messages[-1][1] += "\n" + line.rstrip()
        if messages:
            conversations.append(_from_messages(messages, number))
    return conversations


def _from_messages(messages: list[list[str]], number: int) -> dict:
    system = messages.pop(0)[1] if messages[0][0] == "system" else None
    roles = [role for role, _ in messages]
    if roles != ["user", "assistant"] * (len(messages) // 2) or not messages:
        raise ValueError(f"{HANDWRITTEN_PATH}: conversation {number} is not user/assistant turns: {roles}")
    return conversation([(messages[i][1], messages[i + 1][1]) for i in range(0, len(messages), 2)], system)


# ================================================================ files
def build_conversations(rng: random.Random) -> list[dict]:
    seen: set[str] = set()
    made = []
    for number, conv in enumerate(read_handwritten(), start=1):
        made.append({"id": f"handwritten-{number:04d}", **conv})
        seen.add(repr(conv["turns"]))
    for kind, count in PER_KIND.items():
        builder, topic = BUILDERS[kind]
        done = attempts = 0
        while done < count:
            attempts += 1
            if attempts > count * 50:
                raise RuntimeError(f"too many duplicate {kind} conversations; widen its templates")
            conv = builder(rng)
            if repr(conv["turns"]) in seen:
                continue
            seen.add(repr(conv["turns"]))
            if rng.random() < SYSTEM_CHANCE:
                conv["system"] = SYSTEMS[topic]
            done += 1
            made.append({"id": f"{kind}-{done:04d}", **conv})
    return made


def format_of(rng: random.Random, conv: dict) -> str:
    """Alpaca holds one question without a system message; the other two formats hold anything."""
    single = len(conv["turns"]) == 1 and not conv["system"]
    return rng.choice(list(FILES) if single else ["messages", "sharegpt"])


def as_row(conv: dict, fmt: str) -> dict:
    if fmt == "alpaca":
        question, answer = conv["turns"][0]
        instruction, extra = conv["alpaca"] or (question, "")
        return {"id": conv["id"], "instruction": instruction, "input": extra, "output": answer}
    messages = ([{"role": "system", "content": conv["system"]}] if conv["system"] else []) + [
        {"role": role, "content": text} for turn in conv["turns"] for role, text in zip(("user", "assistant"), turn)]
    if fmt == "messages":
        return {"id": conv["id"], "messages": messages}
    speaker = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"id": conv["id"], "conversations": [{"from": speaker[m["role"]], "value": m["content"]} for m in messages]}


def build_rows(seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    """Rows per format, each file's rows shuffled."""
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {fmt: [] for fmt in FILES}
    for conv in build_conversations(rng):
        fmt = format_of(rng, conv)
        rows[fmt].append(as_row(conv, fmt))
    for fmt_rows in rows.values():
        rng.shuffle(fmt_rows)
    return rows


def gzip_files(rows: dict[str, list[dict]]) -> dict[str, bytes]:
    """File name -> gzip bytes (fixed header, see ../generate.py)."""
    return {name: corpus.gzip_jsonl(rows[fmt], name.removesuffix(".gz")) for fmt, name in FILES.items()}


def build_files(seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    return gzip_files(build_rows(seed))


def shape_of(row: dict) -> tuple[int, bool]:
    """(questions, has a system message) of a row in any of the three formats."""
    if "output" in row:
        return 1, False
    roles = [m.get("role", m.get("from")) for m in row.get("messages", row.get("conversations"))]
    return sum(role in ("user", "human") for role in roles), "system" in roles


def describe(rows: dict[str, list[dict]]) -> str:
    lines = []
    for fmt, fmt_rows in rows.items():
        shapes = [shape_of(row) for row in fmt_rows]
        lines.append(f"{FILES[fmt]}: {len(fmt_rows)} conversations, {sum(q > 1 for q, _ in shapes)} with several "
                     f"questions, {sum(s for _, s in shapes)} with a system message")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return corpus.generator_main(argv, description=__doc__, out_dir=HERE, default_seed=DEFAULT_SEED, build=build_rows,
                                 to_files=gzip_files, describe=describe, command="python data/sample/chat/generate.py")


if __name__ == "__main__":
    sys.exit(main())
