#!/usr/bin/env python3
"""Build tsubame's bundled Japanese sample corpus: data/sample/{train,valid}.jsonl.gz.

Every document comes from the templates and word lists in tables.py (next to this file)
or from the paragraphs in handwritten.txt. Numbers and calendar facts are computed, so
they are right by construction. The output depends only on --seed, which makes the
committed files checkable with --check.

    python data/sample/generate.py            # rewrite both files next to this script
    python data/sample/generate.py --check    # exit 1 if the committed files are stale
"""
from __future__ import annotations

import argparse
import calendar
import datetime as dt
import gzip
import importlib.util
import io
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HANDWRITTEN_PATH = HERE / "handwritten.txt"
DEFAULT_SEED = 20240607
VALID_FRACTION = 0.05
SPLIT_FILES = {"train": "train.jsonl.gz", "valid": "valid.jsonl.gz"}
DOCS_PER_KIND = {"place": 560, "number": 560, "date": 540, "story": 540, "dialogue": 600}


def load_tables():
    """tables.py, loaded by path: data/ is not a package, and putting this folder on sys.path
    would let a bare `import tables` (also PyTables' name) pick up the wrong module elsewhere."""
    spec = importlib.util.spec_from_file_location("tsubame_sample_tables", HERE / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = load_tables()


# ================================================================ helpers
def say(template: str, register: str, **slots) -> str:
    return template.format(**tables.REGISTERS[register], **slots)


def join_ja(items) -> str:
    return "、".join(items)


# ================================================================ places
def prefectures_in(region: str) -> list[tuple]:
    return [p for p in tables.PREFECTURES if p[4] == region]


def office_of(pref: str) -> str:
    return tables.OFFICE[pref[-1]]


def regional_unit(prefs: list[tuple]) -> str:
    """The suffixes that occur among prefs, in the usual order: 都県, 府県, 県 ..."""
    return "".join(s for s in "都道府県" if any(p[0].endswith(s) for p in prefs))


def prefecture_breakdown() -> str:
    """'1都1道2府43県', counted from the table."""
    return "".join(f"{sum(p[0].endswith(s) for p in tables.PREFECTURES)}{s}" for s in "都道府県")


def prefecture_profile(rng: random.Random) -> str:
    name, reading, seat, seat_reading, region = rng.choice(tables.PREFECTURES)
    reg = rng.choice(tables.FACT_REGISTERS)
    templates = [rng.choice(["{p}（{r}）は、{g}地方に{aru}。", "{g}地方の{p}は、「{r}」と読{mu}。",
                             "{p}は{g}地方に属する{k}{cop}。"]),
                 rng.choice(["{o}所在地は{c}（{cr}）{cop}。", "{p}の{o}は{c}に置かれて{iru}。",
                             "{c}は{p}の{o}所在地{cop}。"])]
    if name in tables.LANDLOCKED:
        templates.append("{p}は海に面していない内陸の{k}で、このような都道府県は全国に{inland}つ{aru}。")
    elif rng.random() < 0.5:
        templates.append("{p}は海に面して{iru}。")
    if name not in tables.NAME_MATCH_UNCLEAR and rng.random() < 0.6:
        same = name[:-1] == seat[:-1]
        templates.append("{p}は、{k}名と{o}所在地の名前が" + ("同じ{cop}。" if same else "異な{ri}。"))
    neighbours = [p[0] for p in prefectures_in(region) if p[0] != name]
    if neighbours and rng.random() < 0.7:
        picked = sorted(rng.sample(range(len(neighbours)), min(3, len(neighbours))))
        templates.append("同じ{g}地方には、ほかに" + join_ja(neighbours[i] for i in picked) + "などが{aru}。")
    notes = tables.PREFECTURE_NOTES.get(name, [])
    templates += rng.sample(notes, min(len(notes), rng.randint(1, 2)))
    return "".join(say(t, reg, p=name, r=reading, g=region, k=name[-1], o=office_of(name), c=seat,
                       cr=seat_reading, inland=len(tables.LANDLOCKED)) for t in templates)


def region_overview(rng: random.Random) -> str:
    region, reg = rng.choice(tables.REGIONS), rng.choice(tables.FACT_REGISTERS)
    prefs = prefectures_in(region)
    if len(prefs) == 1:
        s = [say("北海道地方は、北海道だけからなる地方{cop}。道庁所在地は札幌市{cop}。", reg)]
    else:
        unit = regional_unit(prefs)
        s = [say("{g}地方には、{lst}の{n}つの{u}が{aru}。", reg, g=region, lst=join_ja(p[0] for p in prefs),
                 n=len(prefs), u=unit)]
        pairs = [f"{p[0]}は{p[2]}" for p in rng.sample(prefs, min(4, len(prefs)))]
        s.append(say("それぞれの所在地を見ると、{lst}{cop}。", reg, lst=join_ja(pairs)))
        inland = [p[0] for p in prefs if p[0] in tables.LANDLOCKED]
        if inland:
            s.append(say("このうち海に面していないのは、{lst}{cop}。", reg, lst=join_ja(inland)))
        else:
            s.append(say("この地方の{u}は、どれも海に面して{iru}。", reg, u=unit))
    if rng.random() < 0.4:
        s.append(say("日本全体では47の都道府県があり、{b}からなって{iru}。", reg, b=prefecture_breakdown()))
    return "".join(s)


def capital_quiz(rng: random.Random) -> str:
    reg = rng.choice(["desu", "da"])
    lines = [rng.choice(["都道府県の所在地クイズ", "所在地の問題", "地理の練習問題"])]
    for i, (name, _, seat, seat_reading, region) in enumerate(rng.sample(tables.PREFECTURES, rng.randint(3, 6)), 1):
        q = rng.choice(["{p}の{o}所在地はどこ{deshou}か。", "{g}地方にある{p}の{o}は、どこに{aru}か。"])
        lines.append(f"問{i}：" + say(q, reg, p=name, o=office_of(name), g=region))
        lines.append("答え：" + say(rng.choice(["{c}{cop}。", "{c}（{cr}）{cop}。"]), reg, c=seat, cr=seat_reading))
    return "\n".join(lines)


def nature_facts(rng: random.Random) -> str:
    reg = rng.choice(tables.FACT_REGISTERS)
    s = []
    for name, reading, height, where, notes in rng.sample(tables.MOUNTAINS, 2):
        if height:
            s.append(say("{n}（{r}）は{w}にある山で、高さは{h}メートル{cop}。", reg, n=name, r=reading, w=where, h=height))
        else:
            s.append(say("{n}（{r}）は{w}にある山{cop}。", reg, n=name, r=reading, w=where))
        s.append(name + "は、" + say(rng.choice(notes), reg))
    higher, lower = sorted(rng.sample([m for m in tables.MOUNTAINS if m[2]], 2), key=lambda m: -m[2])
    s.append(say("{a}は{b}より{d}メートル高い{adj}。", reg, a=higher[0], b=lower[0], d=higher[2] - lower[2]))
    name, reading, length, where, notes = rng.choice(tables.RIVERS)
    size = f"長さ{length}キロメートルの" if length else ""
    s.append(say("{n}（{r}）は、{w}を流れる{ln}川{cop}。", reg, n=name, r=reading, w=where, ln=size))
    s.append(name + "は、" + say(rng.choice(notes), reg))
    name, reading, where, notes = rng.choice(tables.LAKES)
    s.append(say("{n}（{r}）は{w}にある湖{cop}。", reg, n=name, r=reading, w=where))
    s += [name + "は、" + say(n, reg) for n in notes]
    return "".join(s)


def superlatives(rng: random.Random) -> str:
    reg = rng.choice(tables.FACT_REGISTERS)
    s = [say("日本でいちばん高い山は富士山、いちばん長い川は信濃川、いちばん大きな湖は琵琶湖{cop}。", reg),
         say("面積がいちばん大きい都道府県は北海道、いちばん小さいのは香川県{cop}。", reg)]
    longer, shorter = sorted(rng.sample([r for r in tables.RIVERS if r[2]], 2), key=lambda r: -r[2])
    s.append(say("{a}は{b}より{d}キロメートル長い{adj}。", reg, a=longer[0], b=shorter[0], d=longer[2] - shorter[2]))
    mountain = rng.choice([m for m in tables.MOUNTAINS if m[2]])
    s.append(say("{m}の高さは{h}メートル{cop}。", reg, m=mountain[0], h=mountain[2]))
    rng.shuffle(s)
    return "".join(s)


def place_document(rng: random.Random) -> str:
    builder = rng.choice([prefecture_profile] * 4 + [region_overview, capital_quiz, nature_facts, superlatives])
    return builder(rng)


# ================================================================ numbers
def arithmetic_statement(rng: random.Random, register: str | None = None) -> tuple[int, str, int, int, str]:
    """Return (a, op, b, answer, sentence) with op in '+-*/'; division is always exact."""
    op = rng.choice("+-*/")
    if op == "+":
        a, b = rng.randint(1, 500), rng.randint(1, 500)
        c = a + b
    elif op == "-":
        a = rng.randint(2, 500)
        b = rng.randint(1, a - 1)
        c = a - b
    elif op == "*":
        a, b = rng.randint(2, 30), rng.randint(2, 12)
        c = a * b
    else:
        b, c = rng.randint(2, 12), rng.randint(2, 30)
        a = b * c
    reg = register or rng.choice(list(tables.REGISTERS))
    return a, op, b, c, say(rng.choice(tables.ARITHMETIC_TEMPLATES[op]), reg, a=a, b=b, c=c)


def remainder_statement(rng: random.Random, reg: str) -> str:
    b = rng.randint(3, 9)
    a = b * rng.randint(2, 15) + rng.randint(1, b - 1)
    return say("{a}を{b}で割ると、商は{q}で余りは{r}{cop}。", reg, a=a, b=b, q=a // b, r=a % b)


def counter_problem(rng: random.Random, reg: str) -> str:
    k, op = rng.choice(list(tables.COUNTED)), rng.choice("+-*/")
    x, y = rng.randint(2, 12), rng.randint(2, 9)
    a, b, c = {"+": (x, y, x + y), "-": (x + y, y, x), "*": (x, y, x * y), "/": (x * y, y, x)}[op]
    template = tables.COUNTER_SCENES.get(k, tables.OBJECT_SCENES)[op]
    return say(template, reg, n=rng.choice(tables.NAMES), g=rng.choice(tables.GIVERS), t=rng.choice(tables.COUNTED[k]),
               k=k, a=a, b=b, c=c)


def amount_paid(total: int) -> int:
    """The smallest round sum (a coin, a note or whole 10000-yen notes) that covers total."""
    for amount in (500, 1000, 2000, 5000):
        if amount >= total:
            return amount
    return -(-total // 10000) * 10000


def price_problem(rng: random.Random, reg: str) -> str:
    thing, k, prices = rng.choice(tables.PRICED_ITEMS)
    price, n = rng.choice(prices), rng.randint(2, 9)
    total = price * n
    paid = amount_paid(total)
    s = say("1{k}{p}円の{t}を{n}{k}買うと、代金は{tot}円{cop}。", reg, k=k, p=price, t=thing, n=n, tot=total)
    if paid > total:
        s += say("{m}円を出すと、おつりは{ch}円{cop}。", reg, m=paid, ch=paid - total)
    return s


def unit_conversion(rng: random.Random, reg: str) -> str:
    big, small, ratio = rng.choice(tables.UNIT_RATIOS)
    halves = rng.randint(1, 20)  # amounts in steps of 0.5, so that 2.5 and similar appear
    if (halves * ratio) % 2:
        halves *= 2
    amount = str(halves // 2) if halves % 2 == 0 else f"{halves / 2:.1f}"
    template = rng.choice(["{x}{u}は{y}{v}{cop}。", "{y}{v}を{u}で表すと{x}{u}に{naru}。"])
    return say(template, reg, x=amount, u=big, y=halves * ratio // 2, v=small)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def number_properties(rng: random.Random, reg: str) -> str:
    n = rng.randint(2, 120)
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    s = [say("{n}は{eo}{cop}。", reg, n=n, eo="偶数" if n % 2 == 0 else "奇数")]
    if is_prime(n):
        s.append(say("{n}は1と{n}でしか割り切れないので、素数{cop}。", reg, n=n))
    else:
        s.append(say("{n}の約数は{d}の{k}個{cop}。", reg, n=n, d=join_ja(map(str, divisors)), k=len(divisors)))
    s.append(say("{n}を2回かけると{sq}に{naru}。", reg, n=n, sq=n * n))
    if n >= 10:
        digit_sum = sum(map(int, str(n)))
        verdict = "3の倍数{cop}。" if digit_sum % 3 == 0 else "3の倍数では{nai}。"
        s.append(say("各位の数字を足すと{ds}になるので、{n}は" + verdict, reg, ds=digit_sum, n=n))
    return "".join(s)


def number_document(rng: random.Random) -> str:
    reg = rng.choice(list(tables.REGISTERS))
    shape = rng.choice(["drill", "problems", "units", "properties", "counters", "shopping"])
    if shape == "drill":
        head = rng.choice(["計算の練習", "たし算とひき算、かけ算とわり算", "暗算の問題"])
        body = [arithmetic_statement(rng, reg)[4] for _ in range(rng.randint(4, 7))] + [remainder_statement(rng, reg)]
        return head + "\n" + "".join(body)
    if shape == "problems":
        return "".join(counter_problem(rng, reg) for _ in range(rng.randint(2, 4)))
    if shape == "units":
        head = rng.choice(["単位の換算", "単位の変換", "長さ・重さ・時間の単位"])
        return head + "\n" + "".join(unit_conversion(rng, reg) for _ in range(rng.randint(4, 7)))
    if shape == "properties":
        return number_properties(rng, reg) + number_properties(rng, reg)
    if shape == "counters":
        lesson = [tables.COUNTER_LESSON[0]] + rng.sample(tables.COUNTER_LESSON[1:], 3)
        return "".join(say(x, reg) for x in lesson) + counter_problem(rng, reg) + counter_problem(rng, reg)
    return "".join(price_problem(rng, reg) for _ in range(rng.randint(2, 3)))


# ================================================================ dates
def ja_date(d: dt.date) -> str:
    return f"{d.year}年{d.month}月{d.day}日"


def random_date(rng: random.Random, first=dt.date(1990, 1, 1), last=dt.date(2035, 12, 31)) -> dt.date:
    return first + dt.timedelta(days=rng.randint(0, (last - first).days))


def weekday_fact(rng: random.Random, register: str | None = None) -> tuple[dt.date, str]:
    d = random_date(rng)
    reg = register or rng.choice(tables.FACT_REGISTERS)
    return d, say(rng.choice(tables.WEEKDAY_TEMPLATES), reg, d=ja_date(d), w=tables.WEEKDAYS[d.weekday()])


def wareki(d: dt.date) -> str:
    """The Heisei or Reiwa date for d; the first year of an era is 元年."""
    if d >= tables.REIWA_START:
        era, year = "令和", d.year - 2018
    elif d >= tables.HEISEI_START:
        era, year = "平成", d.year - 1988
    else:
        raise ValueError(f"{d} is before Heisei")
    return f"{era}{'元' if year == 1 else year}年{d.month}月{d.day}日"


def wareki_fact(rng: random.Random, register: str | None = None) -> tuple[dt.date, str]:
    d = random_date(rng, first=tables.HEISEI_START)
    reg = register or rng.choice(tables.FACT_REGISTERS)
    template = rng.choice(["{d}は{j}{cop}。", "{d}を和暦で書くと{j}に{naru}。"])
    return d, say(template, reg, d=ja_date(d), j=wareki(d))


def days_after_fact(rng: random.Random, register: str | None = None) -> tuple[dt.date, int, dt.date, str]:
    start, n = random_date(rng), rng.randint(1, 400)
    end = start + dt.timedelta(days=n)
    reg = register or rng.choice(tables.FACT_REGISTERS)
    return start, n, end, say("{a}の{n}日後は{b}{cop}。", reg, a=ja_date(start), n=n, b=ja_date(end))


def month_profile(rng: random.Random, reg: str) -> str:
    m, year = rng.randint(1, 12), rng.randint(1995, 2035)
    first = dt.date(year, m, 1)
    return "".join([
        say("{m}月の昔の呼び名は{old}{cop}。", reg, m=m, old=tables.MONTH_NAMES_OLD[m - 1]),
        say("季節でいうと、{m}月は{season}にあた{ri}。", reg, m=m, season=tables.SEASON_OF_MONTH[m]),
        say("{m}月といえば{ev}を思いうかべる人も多い{deshou}。", reg, m=m, ev=tables.MONTH_EVENTS[m]),
        say("{y}年の{m}月は{n}日まで{aru}。", reg, y=year, m=m, n=calendar.monthrange(year, m)[1]),
        say("{y}年{m}月1日は{w}曜日{cop}。", reg, y=year, m=m, w=tables.WEEKDAYS[first.weekday()]),
    ])


def year_profile(rng: random.Random, reg: str) -> str:
    year = rng.randint(2022, 2030)
    leap = calendar.isleap(year)
    s = [say("{y}年は" + ("うるう年で、2月は29日まで{aru}。" if leap else "うるう年ではないので、2月は28日まで{cop}。"),
             reg, y=year),
         say("1年は{n}日{cop}。", reg, n=366 if leap else 365)]
    for m, d, name in sorted(rng.sample(tables.FIXED_DAYS, 3)):
        s.append(say("{y}年の{name}（{m}月{d}日）は{w}曜日{cop}。", reg, y=year, name=name, m=m, d=d,
                     w=tables.WEEKDAYS[dt.date(year, m, d).weekday()]))
    s.append(say("和暦でいうと、{y}年は令和{r}年{cop}。", reg, y=year, r=year - 2018))
    return "".join(s)


def day_of_year_fact(rng: random.Random, reg: str) -> str:
    d = random_date(rng)
    n = d.timetuple().tm_yday
    left = (366 if calendar.isleap(d.year) else 365) - n
    return say("{d}は、その年の{n}日目{cop}。その年の終わりまでは、あと{k}日{aru}。", reg, d=ja_date(d), n=n, k=left)


def date_document(rng: random.Random) -> str:
    reg = rng.choice(tables.FACT_REGISTERS)
    shape = rng.choice(["weekdays", "wareki", "month", "year", "mixed"])
    if shape == "weekdays":
        head = rng.choice(["曜日の確認", "カレンダーの問題", "この日は何曜日？"])
        body = [weekday_fact(rng, reg)[1] for _ in range(rng.randint(3, 5))] + [days_after_fact(rng, reg)[3]]
        return head + "\n" + "".join(body)
    if shape == "wareki":
        return say(rng.choice(tables.ERA_FACTS), reg) + "".join(wareki_fact(rng, reg)[1] for _ in range(rng.randint(3, 5)))
    if shape == "month":
        return month_profile(rng, reg)
    if shape == "year":
        return year_profile(rng, reg)
    return (day_of_year_fact(rng, reg) + days_after_fact(rng, reg)[3] + weekday_fact(rng, reg)[1]
            + wareki_fact(rng, reg)[1])


# ================================================================ stories
def fill_slots(rng: random.Random, slot_options: dict) -> dict:
    """Pick a value for every slot; later values may refer to earlier ones; a dict sets several slots."""
    a, b = rng.sample(tables.NAMES, 2)
    slots = {"a": a, "b": b}
    for key, options in slot_options.items():
        value = rng.choice(options)
        if isinstance(value, dict):
            slots.update(value)
        else:
            slots[key] = value.format(**slots)
    return slots


def story_document(rng: random.Random) -> str:
    skeleton = rng.choice(tables.STORIES)
    slots = fill_slots(rng, skeleton["slots"])
    beats = [rng.choice(alts) for p, alts in skeleton["beats"] if p >= 1 or rng.random() < p]
    return "".join(beat.format(**slots) for beat in beats)


# ================================================================ dialogues
def script(lines: list[tuple[str, str]], **slots) -> list[tuple[str, str]]:
    """Fill a dialogue script from tables.py: {slots} in both the speaker and the line."""
    return [(who.format(**slots), text.format(**slots)) for who, text in lines]


def shop_dialogue(rng: random.Random) -> tuple[str, list]:
    shop = rng.choice(list(tables.SHOPS))
    items = rng.sample(tables.SHOPS[shop], 2)
    (item, k, prices), n = items[0], rng.randint(2, 6)
    price = rng.choice(prices)
    total = price * n
    lines = [("店員", "いらっしゃいませ。"), ("客", f"すみません、この{item}はいくらですか。"),
             ("店員", f"1{k}{price}円です。"), ("客", rng.choice([f"じゃあ、{n}{k}ください。", f"それでは、{n}{k}お願いします。"]))]
    if rng.random() < 0.5:
        item2, k2, prices2 = items[1]
        n2, price2 = rng.randint(1, 4), rng.choice(prices2)
        total += n2 * price2
        lines += [("客", f"それと、{item2}も{n2}{k2}ください。"), ("店員", f"かしこまりました。{item2}は1{k2}{price2}円です。")]
    paid = amount_paid(total)
    lines += [("店員", f"全部で{total}円になります。"), ("客", f"{paid}円でお願いします。")]
    change = f"{paid - total}円のお返しです。" if paid > total else "ちょうどいただきます。"
    lines.append(("店員", f"{paid}円お預かりします。{change}ありがとうございました。"))
    return f"{shop}での会話。", lines


def directions_dialogue(rng: random.Random) -> tuple[str, list]:
    dest, turn, side = rng.choice(tables.DESTINATIONS), rng.choice(tables.TURNS), rng.choice(tables.SIDES)
    nth, corner, minutes = rng.choice(tables.ORDINALS), rng.choice(tables.CORNERS), rng.randint(3, 15)
    way = dict(dest=dest, turn=turn, side=side, nth=nth, corner=corner, minutes=minutes,
               landmark=rng.choice(tables.LANDMARKS))
    if rng.random() < 0.6:
        ask = rng.choice(tables.DIRECTIONS_ASKS).format(dest=dest)
        return "道をたずねる。", script(tables.DIRECTIONS_POLITE, ask=ask, **way)
    a, b = rng.sample(tables.NAMES, 2)
    return "友だちどうしの会話。", script(tables.DIRECTIONS_CASUAL, a=a, b=b, **way)


def school_dialogue(rng: random.Random) -> tuple[str, list]:
    subject = rng.choice(tables.SUBJECTS)
    a, b = rng.sample(tables.NAMES, 2)
    first = rng.randint(10, 120)
    last = first + rng.randint(5, 30)
    shape = rng.randint(0, len(tables.SCHOOL_SCRIPTS) - 1)
    time = rng.choice(tables.MEETING_TIMES) if shape == 0 else ""
    lines = script(tables.SCHOOL_SCRIPTS[shape], a=a, b=b, subject=subject, first=first, last=last,
                   pages=last - first + 1, time=time)
    return "学校での会話。", lines


def degrees(t: int) -> str:
    return f"マイナス{-t}" if t < 0 else str(t)


def weather_dialogue(rng: random.Random) -> tuple[str, list]:
    season = rng.choice(list(tables.SEASON_WEATHER))
    low, high, kinds = tables.SEASON_WEATHER[season]
    weather = rng.choice(kinds)
    hi = rng.randint(low, high)
    lo = hi - rng.randint(4, 10)
    advice = tables.RAIN_ADVICE if "雨" in weather or "雪" in weather else tables.SEASON_ADVICE[season]
    if rng.random() < 0.5:
        a, b = rng.sample(tables.NAMES, 2)
        return f"{season}のある日の会話。", script(tables.WEATHER_FRIENDS, a=a, b=b, weather=weather, hi=hi, advice=advice)
    a, b = rng.sample([f + "さん" for f in tables.FAMILY_NAMES], 2)
    lines = script(tables.WEATHER_NEIGHBOURS, a=a, b=b, weather=weather, hi=hi, lo=degrees(lo), spread=hi - lo)
    return f"{season}の朝、近所の人どうしの会話。", lines


def restaurant_dialogue(rng: random.Random) -> tuple[str, list]:
    dishes = rng.sample(tables.MENU, rng.randint(1, 3))
    names = "と".join(d[0] for d in dishes)
    total = sum(d[1] for d in dishes)
    lines = [("店員", "いらっしゃいませ。何名様ですか。"), ("客", f"{len(dishes)}人です。"),
             ("店員", "こちらのお席へどうぞ。ご注文がお決まりになりましたら、お呼びください。"),
             ("客", f"すみません、{names}をお願いします。"), ("店員", "お飲み物はいかがですか。")]
    if rng.random() < 0.5:
        drink, price = rng.choice(tables.DRINKS)
        total += price * len(dishes)
        lines += [("客", f"{drink}を{len(dishes)}つお願いします。"), ("店員", "かしこまりました。")]
    else:
        lines += [("客", "いえ、けっこうです。"), ("店員", "かしこまりました。少々お待ちください。")]
    lines += [("客", "ごちそうさまでした。お会計をお願いします。"), ("店員", f"お会計は{total}円です。ありがとうございました。")]
    return "レストランでの会話。", lines


def reservation_dialogue(rng: random.Random) -> tuple[str, list]:
    place = rng.choice(tables.RESERVATION_PLACES)
    month, day, hour = rng.randint(1, 12), rng.randint(1, 28), rng.randint(10, 16)
    other = hour + rng.choice([1, 2])
    name = rng.choice(tables.FAMILY_NAMES)
    lines = script(tables.RESERVATION_SCRIPT, place=place, month=month, day=day, hour=hour, other=other, name=name)
    return "電話での予約。", lines


def plans_dialogue(rng: random.Random) -> tuple[str, list]:
    a, b = rng.sample(tables.NAMES, 2)
    activity, meet = rng.choice(tables.ACTIVITIES), rng.choice(tables.MEETING_PLACES)
    hour = rng.randint(8, 14)
    return "週末の予定。", script(tables.PLANS_SCRIPT, a=a, b=b, activity=activity, meet=meet, hour=hour)


DIALOGUES = [shop_dialogue, directions_dialogue, school_dialogue, weather_dialogue,
             restaurant_dialogue, reservation_dialogue, plans_dialogue]


def render_with_colons(lines: list) -> str:
    return "\n".join(f"{who}：{text}" for who, text in lines)


def render_as_narration(rng: random.Random, lines: list) -> str:
    """「…」と X が言った。 narration in plain or polite past, with the quote's final 。 dropped."""
    polite = rng.random() < 0.5
    out, previous = [], (None, "")
    for who, text in lines:
        quote = text[:-1] if text.endswith("。") else text
        if text.endswith(("か。", "？")):
            stem = "たずね"
        elif previous[1].endswith(("か。", "？")):
            stem = "答え"
        elif previous[0] == who:
            stem = "続け"
        else:
            stem = "言い"
        verb = stem + "ました" if polite else {"たずね": "たずねた", "答え": "答えた", "続け": "続けた", "言い": "言った"}[stem]
        out.append(f"「{quote}」と{who}が{verb}。")
        previous = (who, text)
    return "".join(out)


def dialogue_document(rng: random.Random) -> str:
    scene, lines = rng.choice(DIALOGUES)(rng)
    body = render_with_colons(lines) if rng.random() < 0.6 else render_as_narration(rng, lines)
    return scene + "\n" + body if rng.random() < 0.7 else body


# ================================================================ corpus
BUILDERS = {"place": place_document, "number": number_document, "date": date_document,
            "story": story_document, "dialogue": dialogue_document}


def read_handwritten(path: Path = HANDWRITTEN_PATH) -> list[str]:
    """Paragraphs separated by blank lines; lines inside a paragraph are joined without spaces."""
    blocks = path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n\n")
    return ["".join(line.strip() for line in b.splitlines()) for b in blocks if b.strip()]


def build_documents(rng: random.Random) -> list[dict]:
    seen: set[str] = set()
    docs = []
    for i, text in enumerate(read_handwritten(), 1):
        docs.append({"id": f"handwritten-{i:04d}", "text": text})
        seen.add(text)
    for kind, count in DOCS_PER_KIND.items():
        made = attempts = 0
        while made < count:
            attempts += 1
            if attempts > count * 20:
                raise RuntimeError(f"too many duplicate {kind} documents; widen its templates")
            text = BUILDERS[kind](rng)
            if text in seen:
                continue
            seen.add(text)
            made += 1
            docs.append({"id": f"{kind}-{made:04d}", "text": text})
    return docs


def kind_of(doc: dict) -> str:
    return doc["id"].rsplit("-", 1)[0]


def split_documents(rng: random.Random, docs: list[dict]) -> dict[str, list[dict]]:
    """Hold out about VALID_FRACTION of every kind (at least one document each), then shuffle each split."""
    valid_ids = set()
    for kind in dict.fromkeys(kind_of(d) for d in docs):
        ids = [d["id"] for d in docs if kind_of(d) == kind]
        valid_ids.update(rng.sample(ids, max(1, round(len(ids) * VALID_FRACTION))))
    splits = {"train": [d for d in docs if d["id"] not in valid_ids], "valid": [d for d in docs if d["id"] in valid_ids]}
    for split in splits.values():
        rng.shuffle(split)
    return splits


def gzip_jsonl(docs: list[dict], inner_name: str) -> bytes:
    """JSON Lines in gzip with a fixed header (mtime 0, fixed file name) so the bytes are reproducible."""
    payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=inner_name, mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    return buffer.getvalue()


def build_splits(seed: int = DEFAULT_SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return split_documents(rng, build_documents(rng))


def split_files(splits: dict[str, list[dict]]) -> dict[str, bytes]:
    """File name -> gzip bytes, for both splits."""
    return {name: gzip_jsonl(splits[split], name.removesuffix(".gz")) for split, name in SPLIT_FILES.items()}


def build_files(seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    return split_files(build_splits(seed))


def describe(splits: dict[str, list[dict]]) -> str:
    lines = []
    for split, docs in splits.items():
        lines.append(f"{split}: {len(docs)} documents, {sum(len(d['text']) for d in docs)} characters")
        for kind in sorted(dict.fromkeys(kind_of(d) for d in docs)):
            of_kind = [d for d in docs if kind_of(d) == kind]
            lines.append(f"  {kind:<12} {len(of_kind):>5} documents {sum(len(d['text']) for d in of_kind):>8} characters")
    return "\n".join(lines)


def stale_files(expected: dict[str, bytes], out_dir: Path) -> list[str]:
    """Why each file of ``out_dir`` differs from the bytes a seed makes (empty: all match)."""
    stale = []
    for name, data in expected.items():
        path = out_dir / name
        if not path.exists():
            stale.append(f"{path} is missing")
        elif path.read_bytes() != data:
            same_text = gzip.decompress(path.read_bytes()) == gzip.decompress(data)
            why = "same text, different gzip bytes (another zlib?)" if same_text else "content differs"
            stale.append(f"{path}: {why}")
    return stale


def generator_main(argv, *, description, out_dir, default_seed, build, to_files, describe, command) -> int:
    """The command line every sample generator shares: write the files a seed makes, or ``--check`` them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=default_seed)
    parser.add_argument("--out-dir", type=Path, default=out_dir)
    parser.add_argument("--check", action="store_true", help="compare with the files in --out-dir instead of writing")
    args = parser.parse_args(argv)
    content = build(args.seed)
    files = to_files(content)
    if args.check:
        stale = stale_files(files, args.out_dir)
        if stale:
            print(f"{args.out_dir} is out of date; run `{command}`:\n  " + "\n  ".join(stale), file=sys.stderr)
            return 1
        print(f"{', '.join(files)} match seed {args.seed}")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out_dir / name).write_bytes(data)
        print(f"wrote {args.out_dir / name} ({len(data)} bytes)")
    print(describe(content))
    return 0


def main(argv: list[str] | None = None) -> int:
    return generator_main(argv, description=__doc__, out_dir=HERE, default_seed=DEFAULT_SEED, build=build_splits,
                          to_files=split_files, describe=describe, command="python data/sample/generate.py")


if __name__ == "__main__":
    sys.exit(main())
