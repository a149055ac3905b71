"""Stage `prepare`: the Japanese corpus pipeline (datatrove), then tokenize and pack into training sequences.

Reads the sources of ``corpus`` in params.yaml; normalises, filters, deduplicates (exact and MinHash) in
``--work`` (resumable: finished shards are kept); splits by document, tokenizes and packs into
``train.npy`` / ``valid.npy`` (int32 ``[n, seq_len]``, see ``taid.data``) and ``meta.json`` in ``--out``;
writes the report to ``--report`` and prints its summary.
"""

from corpus.report import summary
from corpus.run import EmptyCorpusError, run_corpus
from stages.common import StageError, atomic_dir, section, stage_main, write_json
from taid.vocab import load_tokenizer, tokenizer_fingerprint


def add_arguments(parser):
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (stage tokenizer)")
    parser.add_argument("--out", required=True, help="directory for train.npy, valid.npy and meta.json")
    parser.add_argument("--work", default="data/corpus", help="working directory of the corpus pipeline")
    parser.add_argument("--report", default="metrics/corpus.json", help="corpus report (JSON)")


def run(args, params):
    corpus, seq_len = section(params, "corpus"), section(params, "prepare")["seq_len"]
    tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer.eos_token_id is None:
        raise StageError(f"tokenizer {args.tokenizer} has no EOS token to separate documents")
    with atomic_dir(args.out) as out:
        try:
            report = run_corpus(corpus, args.work, tokenizer, out, seq_len)
        except EmptyCorpusError as error:
            raise StageError(str(error)) from None
        meta = {"seq_len": seq_len, "eos_id": tokenizer.eos_token_id,
                "tokenizer_sha256": tokenizer_fingerprint(tokenizer), **report["splits"]}
        write_json(out / "meta.json", meta)
    write_json(args.report, report)
    print(summary(report))


if __name__ == "__main__":
    stage_main("prepare", __doc__, add_arguments, run)
