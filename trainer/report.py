"""The evaluation report: Markdown plus one PNG (training curve; our metrics beside the references)."""
from __future__ import annotations

from pathlib import Path

from trainer.evaluate import KS

# Published full-ranking results on amazon-toys (Toys_and_Games.txt, leave-one-out, all items).
REFERENCES = {
    "ICLRec (WWW'22)": {"HR@5": 0.0598, "NDCG@5": 0.0404, "HR@10": 0.0834, "NDCG@10": 0.0480,
                        "HR@20": 0.1138, "NDCG@20": 0.0557},
    "SASRec + sampled softmax (RecSys'25)": {"HR@10": 0.0970, "NDCG@10": 0.0580},
    "ICSRec (WSDM'24)": {"HR@5": 0.0788, "NDCG@5": 0.0571, "HR@10": 0.1055, "NDCG@10": 0.0657,
                         "HR@20": 0.1368, "NDCG@20": 0.0736},
    "BSARec (AAAI'24)": {"HR@5": 0.0805},
}
REFERENCE_DATA = "Toys_and_Games.txt"
METRICS = [f"{name}@{k}" for k in KS for name in ("HR", "NDCG")]


def references_for(data: Path | str) -> dict[str, dict[str, float]]:
    """The published figures only apply to the file they were measured on."""
    return REFERENCES if Path(data).name == REFERENCE_DATA else {}


def write(out_dir: Path | str, results: dict[str, dict[str, float]], history: list[dict],
          facts: dict[str, str], sections: dict[str, dict[str, dict[str, float]]] | None = None) -> Path:
    """results: row name -> metrics (ours first); facts: protocol lines shown above the table;
    sections: more tables (title -> rows), each on its own population, after the plot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot(out / "report.png", results, history)
    lines = ["# Next-item model: full-ranking evaluation", ""]
    lines += [f"- **{key}**: {value}" for key, value in facts.items()]
    lines += [""] + _table(results)
    lines += ["", "![training curve and comparison](report.png)", ""]
    for title, rows in (sections or {}).items():
        lines += [f"## {title}", ""] + _table(rows) + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _table(rows: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, metrics in rows.items():
        cells = [f"{metrics[m]:.4f}" if m in metrics else "–" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _plot(path: Path, results: dict[str, dict[str, float]], history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, bars) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 1.6]})
    _curve(curve, history)
    _bars(bars, results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve(ax, history: list[dict]) -> None:
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], "o-", markersize=3, color="tab:gray", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("Training")
    valid = ax.twinx()
    for metric, colour in (("valid_NDCG@20", "tab:blue"), ("valid_HR@20", "tab:orange")):
        valid.plot(epochs, [h[metric] for h in history], "o-", markersize=3, color=colour,
                   label=metric.replace("_", " "))
    if history:
        best = max(history, key=lambda h: h["valid_NDCG@20"])["epoch"]
        valid.axvline(best, color="tab:green", linestyle="--", label=f"kept: epoch {best}")
    valid.set_ylabel("validation metric")
    handles = ax.get_legend_handles_labels()[0] + valid.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right")


def _bars(ax, results: dict[str, dict[str, float]]) -> None:
    width = 0.8 / max(len(results), 1)
    for row, (name, metrics) in enumerate(results.items()):
        xs = [i + (row - (len(results) - 1) / 2) * width for i, m in enumerate(METRICS) if m in metrics]
        values = [metrics[m] for m in METRICS if m in metrics]
        drawn = ax.bar(xs, values, width, label=name)
        ax.bar_label(drawn, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set_ylabel("score (higher is better)")
    ax.set_ylim(0, max((v for m in results.values() for v in m.values()), default=0.1) * 1.25)
    ax.set_title("Test set, full ranking over all items")
    ax.legend(fontsize=8, loc="upper left")
