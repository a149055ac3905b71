"""A few readable lines summing up the chat report."""


def summary(report):
    sources = report["sources"].values()
    read = sum(s["rows"] for s in sources)
    well_formed = sum(s["conversations"] for s in sources)
    lines = [f"chat: {read:,} rows read from {len(report['sources'])} sources, {well_formed:,} conversations "
             f"(seq_len {report['seq_len']}, packing {'on' if report['packing'] else 'off'}, "
             f"truncation {report['truncation']})"]
    for name, source in report["sources"].items():
        formats = ", ".join(f"{fmt} {n:,}" for fmt, n in sorted(source["formats"].items())) or "none"
        lines.append(f"  {name}: {source['rows']:,} rows → {formats}; kept train {source['kept']['train']:,}, "
                     f"valid {source['kept']['valid']:,}")
    if report["malformed"]:
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(report["malformed"].items()))
        lines.append(f"  malformed rows skipped: {skipped}")
        lines += [f"    {e['where']}: {e['reason']}" + (f" ({e['detail']})" if e["detail"] else "")
                  for e in report["malformed_examples"][:5]]
    truncated = {k: v for k, v in report["truncated"].items() if v}
    lines.append("  truncation: " + (", ".join(f"{k} {v:,}" for k, v in truncated.items()) or "nothing cut"))
    for split, counts in report["splits"].items():
        lines.append(f"  {split}: {counts['conversations']:,} conversations in {counts['rows']:,} rows, "
                     f"{counts['tokens']:,} tokens ({counts['target_tokens']:,} targets), fill {counts['fill']:.0%}")
    return "\n".join(lines)
