"""Tasks on the bundled fixtures and on broken copies: official formats parsed, malformed rows counted,
missing files named, the few-shot prompt exactly as written by hand, multiple choice by a stub LM."""
import json
import shutil

import pytest

from eval.data import DataError, LoadReport
from eval.tasks import ALL_TASKS, RunContext, get_task
from tests.test_eval_support import FIXTURES, StubLM, no_progress


def load(name, data_dir=FIXTURES, **settings):
    task = get_task(name)
    report = LoadReport()
    context = RunContext(data_dir=data_dir, settings=settings, progress=no_progress)
    examples, exemplars = task.load(context, settings.get("shots", task.shots), report)
    return examples, exemplars, report


@pytest.mark.parametrize("name, n, first_input, first_target", [
    ("jcommonsenseqa", 5, "質問：電車に乗るときに必要なものは？\n選択肢：0.切符,1.鍋,2.枕,3.植木鉢,4.絵の具", "0"),
    ("jsquad", 4, "文章：東京タワー [SEP] 東京タワーは1958年に完成した電波塔で、高さは333メートルである。港区芝公園にある。"
                  "\n質問：東京タワーが完成したのは何年か。", "1958年"),
    ("jemhopqa", 4, "質問：北海道と沖縄県ではどちらの面積が大きいですか？", "北海道"),
    ("niilc", 4, "質問：日本で一番大きい湖は何？", "琵琶湖"),
    ("jmmlu", 4, "質問：6 × 7 はいくつか。\n選択肢：A.36,B.42,C.48,D.13", "B"),   # files in name order
    ("mgsm", 5, "問題：ジャネットのアヒルは1日に16個の卵を産みます。毎朝3個食べ、4個をお菓子作りに使い、残りを1個2ドルで"
                "売ります。1日に何ドル稼ぎますか？", "18"),
    ("xlsum", 3, "ニュース記事:市内に新しい駅が開業した。初日には多くの人が訪れ、記念の切符を買い求めた。"
                 "市は駅の周りに商業施設を整備する計画だ。", "市内に新しい駅が開業し、多くの人が訪れた。"),
    ("wmt20_en_ja", 4, "The train arrives at nine o'clock.", "電車は9時に到着します。"),
    ("wmt20_ja_en", 4, "東京から大阪まで新幹線で行きます。", "I will go from Tokyo to Osaka by Shinkansen."),
])
def test_fixtures_parse_in_the_official_formats(name, n, first_input, first_target):
    examples, exemplars, report = load(name)
    assert len(examples) == n and report.n_malformed == 0
    assert (examples[0].input, examples[0].target) == (first_input, first_target)
    task = get_task(name)
    assert all(len(exemplars[ex.group]) == task.shots for ex in examples)


def test_exemplars_come_from_the_train_split_or_each_jmmlu_subjects_head():
    _, exemplars, _ = load("niilc")
    assert [s.target for s in exemplars[""]] == ["富士山", "東京", "4,四つ", "足利義満"]   # answers joined by commas
    _, exemplars, _ = load("wmt20_en_ja")   # the ja-en dev set read the other way round
    assert exemplars[""][0].input == "The weather is nice today." and exemplars[""][0].target == "今日は天気が良いです。"
    examples, exemplars, _ = load("jmmlu")
    assert sorted(exemplars) == ["elementary_mathematics", "japanese_history"]
    assert [s.target for s in exemplars["japanese_history"]] == ["A", "B", "C", "D", "A"]
    assert {ex.group for ex in examples} == {"elementary_mathematics", "japanese_history"}


EXPECTED_PROMPT = """以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。

### 指示:
質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号（例：0）でするものとします。 回答となる数値をint型で返し、他には何も含めないことを厳守してください。

### 入力:
質問：雨の日に外出するときに持っていくものは？
選択肢：0.傘,1.扇風機,2.冷蔵庫,3.布団,4.机

### 応答:
0

### 入力:
質問：朝ごはんを食べる場所として最も自然なのは？
選択肢：0.駐車場,1.台所,2.屋根,3.線路,4.倉庫

### 応答:
1

### 入力:
質問：電車に乗るときに必要なものは？
選択肢：0.切符,1.鍋,2.枕,3.植木鉢,4.絵の具

### 応答:
"""


def test_few_shot_prompt_equals_the_hand_written_one():
    backend = StubLM(replies={EXPECTED_PROMPT: "0\n\n### 入力:"})
    context = RunContext(data_dir=FIXTURES, settings={"shots": 2}, limit=1, progress=no_progress)
    result = get_task("jcommonsenseqa").run(backend, context)
    assert backend.prompts == [EXPECTED_PROMPT]
    assert result["score"] == 1.0 and result["shots"] == 2 and result["mode"] == "generate"  # cut at the blank line


GOLD = {"電車": "0", "魚": "1", "手紙": "2", "夜空": "3", "歯": "4"}


def gold_for(context):
    question = context.rsplit("質問：", 1)[1]
    return next(label for word, label in GOLD.items() if question.startswith(word))


@pytest.mark.parametrize("preferred, expected", [
    (gold_for, 1.0),                 # prefers every gold label
    (lambda context: "0", 0.2),      # always "0": right on the one question whose label is 0
    (lambda context: "9", 0.2),      # prefers nothing offered: the tie goes to the first choice, "0"
])
def test_loglikelihood_choice_picks_the_choice_the_lm_prefers(preferred, expected):
    backend = StubLM(preferred)
    context = RunContext(data_dir=FIXTURES, settings={"mode": "loglikelihood"}, progress=no_progress)
    result = get_task("jcommonsenseqa").run(backend, context)
    assert result["mode"] == "loglikelihood" and result["n"] == 5
    assert len(backend.contexts) == 5 * 5   # every choice of every question
    assert result["score"] == pytest.approx(expected)


def test_generation_only_tasks_refuse_loglikelihood_mode():
    context = RunContext(data_dir=FIXTURES, settings={"mode": "loglikelihood"}, progress=no_progress)
    with pytest.raises(DataError, match="jsquad.mode"):
        get_task("jsquad").run(StubLM(), context)


def test_unknown_task_settings_and_names_are_refused():
    with pytest.raises(DataError, match="unknown keys \\['shotz'\\]"):
        get_task("mgsm").run(StubLM(), RunContext(data_dir=FIXTURES, settings={"shotz": 2}, progress=no_progress))
    with pytest.raises(DataError, match="mgsm.shots: expected a whole number"):
        get_task("mgsm").run(StubLM(), RunContext(data_dir=FIXTURES, settings={"shots": "4"}, progress=no_progress))
    with pytest.raises(DataError, match="mgsm.hf: needs a 'dataset'"):
        get_task("mgsm").run(StubLM(), RunContext(data_dir=FIXTURES, settings={"hf": {}}, progress=no_progress))
    with pytest.raises(DataError, match="unknown task 'jcqa'"):
        get_task("jcqa")


@pytest.fixture
def broken(tmp_path):
    """A copy of the fixtures with malformed rows added to each format."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES, root)
    with open(root / "JCommonsenseQA/valid-v1.1.json", "a", encoding="utf-8") as f:
        f.write("{not json\n")
        f.write(json.dumps({"q_id": 1, "question": "問", "choice0": "a", "label": 0}) + "\n")   # choices missing
        f.write(json.dumps({"q_id": 2, "question": "問", **{f"choice{i}": "x" for i in range(5)}, "label": 7}) + "\n")
    squad = json.loads((root / "JSQuAD/valid-v1.1.json").read_text())
    squad["data"][0]["paragraphs"][0]["qas"].append({"id": "x", "question": "答えのない質問", "answers": []})
    (root / "JSQuAD/valid-v1.1.json").write_text(json.dumps(squad, ensure_ascii=False))
    with open(root / "JMMLU/japanese_history.csv", "a", encoding="utf-8") as f:
        f.write("問,a,b,c,d,E\n問,a,b,c\n")
    with open(root / "MGSM/mgsm_ja.tsv", "a", encoding="utf-8") as f:
        f.write("区切りのない行\n問題\tたくさん\n")
    reference = root / "WMT20/newstest2020-enja-ref.ja.sgm"
    reference.write_text(reference.read_text().replace('<seg id="4">りんごを5個買いました。</seg>\n', ""))
    xml = root / "NIILC/NIILC-ECQA2015_test.xml"
    xml.write_text(xml.read_text().replace("<answer>紫式部</answer>", "<answer>-</answer>"))
    return root


@pytest.mark.parametrize("name, n, malformed", [
    ("jcommonsenseqa", 5, {"malformed JSON": 1, "missing or empty 'choice1'": 1, "label 7 out of range": 1}),
    ("jsquad", 4, {"no answers": 1}),
    ("jmmlu", 4, {"answer 'E' is not one of A-D": 1, "expected 6 fields, got 4": 1}),
    ("mgsm", 5, {"expected 2 tab-separated fields, got 1": 1, "answer 'たくさん' is not a number": 1}),
    ("wmt20_en_ja", 3, {"segment missing from the reference file": 1}),
    ("niilc", 3, {"no answer": 1}),
])
def test_malformed_rows_are_counted_with_their_place_and_skipped(broken, name, n, malformed):
    examples, _, report = load(name, broken)
    assert len(examples) == n
    assert report.malformed == malformed
    assert report.first and all(str(broken) in where for where in report.first)


def test_malformed_counts_reach_the_result_row(broken):
    context = RunContext(data_dir=broken, settings={"mode": "loglikelihood"}, progress=no_progress)
    result = get_task("jcommonsenseqa").run(StubLM(gold_for), context)
    assert result["score"] == 1.0 and result["n"] == 5 and result["malformed"] == 3
    assert result["malformed_first"][0].endswith("valid-v1.1.json:6: malformed JSON")


def test_a_missing_file_is_an_error_naming_the_task_and_path(tmp_path):
    with pytest.raises(DataError) as error:
        load("xlsum", tmp_path)
    assert "task xlsum" in str(error.value) and str(tmp_path / "XLSum/japanese_test.jsonl") in str(error.value)


def test_a_path_in_params_replaces_the_default_file(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "XLSum/japanese_test.jsonl").read_text().splitlines()]
    (tmp_path / "mine.jsonl").write_text(json.dumps(rows[1], ensure_ascii=False) + "\n")
    examples, _, _ = load("xlsum", FIXTURES, path=str(tmp_path / "mine.jsonl"))
    assert [ex.target for ex in examples] == ["図書館の利用者が去年より増えた。"]


def test_an_hf_dataset_id_is_read_only_when_named(monkeypatch):
    calls = []
    rows = {"test": [{"question": "問題：1+1は？", "answer_number": "2"}],
            "train": [{"question": f"例{i}", "answer_number": str(i)} for i in range(4)]}

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return rows[split]

    import datasets
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples, exemplars, _ = load("mgsm", FIXTURES, hf={"dataset": "someone/mgsm", "config": "ja"})
    assert calls == [("someone/mgsm", "ja", "test"), ("someone/mgsm", "ja", "train")]
    assert [ex.target for ex in examples] == ["2"] and [s.target for s in exemplars[""]] == ["0", "1", "2", "3"]


def test_every_task_has_a_fixture_or_a_stated_reason_to_skip():
    runs_on_fixtures = set(ALL_TASKS) - {"perplexity", "mt_bench"}
    for name in runs_on_fixtures:
        examples, _, report = load(name)
        assert examples and report.n_malformed == 0, name
