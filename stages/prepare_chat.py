"""Stage `prepare_chat`: chat (instruction) data → the instruct stage's token and target arrays.

Reads the sources of ``chat`` in params.yaml (messages, ShareGPT or Alpaca rows in JSON Lines or Parquet),
renders each conversation with the tokenizer's chat template and writes to ``--out``: ``{train,valid}.npy``
(int32 ``[n_rows, seq_len]``, padding -1), ``{train,valid}.targets.npy`` (bool, True on answer tokens) and
``meta.json``; writes the report to ``--report`` and prints its summary.
"""

from chat.prepare import prepare_chat
from chat.report import summary
from chat.template import require_chat_template, template_sha256
from stages.common import atomic_dir, section, stage_main, write_json
from taid.data import PAD
from taid.vocab import load_tokenizer, tokenizer_fingerprint


def add_arguments(parser):
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (stage tokenizer)")
    parser.add_argument("--out", required=True, help="directory for the arrays and meta.json")
    parser.add_argument("--report", default="metrics/chat.json", help="chat data report (JSON)")


def run(args, params):
    chat = section(params, "chat", getattr(args, "params", "params.yaml"))
    tokenizer = load_tokenizer(args.tokenizer)
    require_chat_template(tokenizer, args.tokenizer)
    with atomic_dir(args.out) as out:
        report = prepare_chat(chat, tokenizer, out)
        meta = {"tokenizer_sha256": tokenizer_fingerprint(tokenizer),
                "chat_template_sha256": template_sha256(tokenizer),
                "seq_len": report["seq_len"], "packing": report["packing"], "truncation": report["truncation"],
                "pad_id": PAD, **report["splits"]}
        write_json(out / "meta.json", meta)
    write_json(args.report, report)
    print(summary(report))


if __name__ == "__main__":
    stage_main("prepare_chat", __doc__, add_arguments, run)
