"""The chat pipeline behind the prepare_chat stage: read the sources, split by conversation, tokenize with the
chat template, fit into ``seq_len``, write the arrays (see ``chat.pack``) and return the report."""
import json
from collections import Counter
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

from chat.formats import FORMATS, ChatDataError, SourceReport, read_source
from chat.pack import TRUNCATION_MODES, ConversationStore, fit_turns, new_counts
from chat.template import tokenize_conversations
from corpus.pack import copies, is_valid

CHAT_KEYS = {"seq_len", "packing", "truncation", "valid_fraction", "seed", "sources"}
SOURCE_KEYS = {"name", "path", "format", "weight", "split"}
SPLITS = ("train", "valid")
BATCH_SIZE = 256
EXAMPLES_REPORTED = 10


def check_settings(chat):
    """Refuse unknown keys and impossible values in the ``chat`` section, naming them."""
    unknown = set(chat) - CHAT_KEYS
    if unknown:
        raise ValueError(f"chat: unknown keys {sorted(unknown)}; known: {sorted(CHAT_KEYS)}")
    if not isinstance(chat.get("seq_len"), int) or chat["seq_len"] < 2:
        raise ValueError(f"chat.seq_len must be an integer >= 2, got {chat.get('seq_len')!r}")
    if chat.get("truncation", "turns") not in TRUNCATION_MODES:
        raise ValueError(f"chat.truncation must be one of {list(TRUNCATION_MODES)}, got {chat['truncation']!r}")
    if not 0 <= chat.get("valid_fraction", 0.05) < 1:
        raise ValueError(f"chat.valid_fraction must be in [0, 1), got {chat['valid_fraction']!r}")
    if not chat.get("sources"):
        raise ValueError("chat.sources is empty: name at least one source")
    names = [check_source(source) for source in chat["sources"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"chat.sources: names must be unique, {repeated} repeat")


def check_source(source):
    if not isinstance(source, dict) or "name" not in source or "path" not in source:
        raise ValueError(f"chat.sources: each source needs a name and a path, got {source!r}")
    where = f"chat source '{source['name']}'"
    unknown = set(source) - SOURCE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(SOURCE_KEYS)}")
    if source.get("format", "auto") not in FORMATS:
        raise ValueError(f"{where}: format must be one of {list(FORMATS)}, got {source['format']!r}")
    weight = source.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"{where}: weight must be a number >= 0, got {weight!r}")
    if source.get("split") not in (None, *SPLITS):
        raise ValueError(f"{where}: split must be 'train' or 'valid' (or left out), got {source['split']!r}")
    return source["name"]


def conversation_key(messages):
    """The text that decides a conversation's split and repeats: the same conversation always lands alike."""
    return json.dumps(messages, ensure_ascii=False, sort_keys=True)


def batches(iterable, size):
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


class Splits:
    """Where each conversation goes: its split by hash (or its source's ``split``), its repeats by the source's
    weight (training side only), fitted into ``seq_len``; streamed into one store per split."""

    def __init__(self, chat, out):
        self.seq_len, self.truncation = chat["seq_len"], chat.get("truncation", "turns")
        self.seed, self.valid_fraction = chat.get("seed", 0), chat.get("valid_fraction", 0.05)
        self.stores = {split: ConversationStore(Path(out) / f".{split}") for split in SPLITS}
        self.counts = new_counts()

    def add(self, conversation, turns, source):
        """Keep one tokenized conversation; return its split, or None when it was dropped (counted)."""
        if turns is None:
            self.counts["token_crosses_turn_boundary"] += 1
            return None
        fitted = fit_turns(turns, self.seq_len, self.truncation, self.counts)
        if fitted is None:
            return None
        key = conversation_key(conversation.messages)
        split = source.get("split") or ("valid" if is_valid(key, self.seed, self.valid_fraction) else "train")
        repeats = copies(key, self.seed, source.get("weight", 1.0)) if split == "train" else 1
        self.stores[split].add(*fitted, copies=repeats)
        return split

    def write(self, out, packing):
        return {split: store.write(out, split, self.seq_len, packing, self.seed)
                for split, store in self.stores.items()}


def prepare_chat(chat, tokenizer, out, progress=True):
    """Write ``{train,valid}.npy`` and ``{train,valid}.targets.npy`` into ``out``; return the report."""
    check_settings(chat)
    splits, sources = Splits(chat, out), {}
    for source in chat["sources"]:
        report = SourceReport(source["name"], source["path"], source.get("format", "auto"))
        conversations = read_source(source["name"], source["path"], report.format, report)
        conversations = tqdm(conversations, desc=f"chat {source['name']}", unit=" conversations", disable=not progress)
        kept = Counter({split: 0 for split in SPLITS})
        for batch in batches(conversations, BATCH_SIZE):
            turns = tokenize_conversations(tokenizer, [c.messages for c in batch], [c.where for c in batch])
            kept.update(splits.add(conversation, conversation_turns, source)
                        for conversation, conversation_turns in zip(batch, turns))
        kept.pop(None, None)
        sources[source["name"]] = {**report.as_dict(), "kept": dict(kept)}
    packing = bool(chat.get("packing", False))
    report = {"seq_len": chat["seq_len"], "packing": packing, "truncation": splits.truncation, "sources": sources,
              **malformed_totals(sources), "truncated": dict(splits.counts), "splits": splits.write(out, packing)}
    check_splits(report)
    return report


def malformed_totals(sources):
    malformed, examples = Counter(), []
    for name, source in sources.items():
        malformed.update(source["malformed"])
        examples += [{"source": name, **example} for example in source["malformed_examples"]]
    return {"malformed": dict(malformed), "malformed_examples": examples[:EXAMPLES_REPORTED]}


def check_splits(report):
    """Both splits must hold rows: say why not, and what to change."""
    for split, counts in report["splits"].items():
        if counts["rows"]:
            continue
        read = sum(source["conversations"] for source in report["sources"].values())
        hint = ("raise chat.valid_fraction or give a source `split: valid`" if split == "valid" and read else
                f"{read} well-formed conversations were read; malformed rows: {report['malformed']}; "
                f"dropped by truncation: {report['truncated']}")
        raise ChatDataError(f"the {split} split of the chat data is empty: {hint}")
