"""The paper's Table 1 (SFT per training set) and Table 2 (DPO on each SFT model, change from its SFT baseline).

Both are built from one long results frame with columns model, stage, train_set, task, problems,
accuracy, ci_low, ci_high, and written as HTML (for the notebook), CSV (numbers) and Markdown.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from revlib.core import io

AVERAGE = "Average"


@dataclass
class Table:
    name: str
    numbers: pd.DataFrame  # one row per table row, numeric columns (for CSV)
    cells: pd.DataFrame  # the same rows as display strings, without markup
    bold: pd.DataFrame  # True where the cell is the best for its model
    caption: str

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.cells.columns)
        body = []
        for i in range(len(self.cells)):
            tds = []
            for c in self.cells.columns:
                text = html.escape(str(self.cells.iloc[i][c]))
                tds.append(f"<td><b>{text}</b></td>" if self.bold.iloc[i][c] else f"<td>{text}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        return (f"<p><b>{html.escape(self.caption)}</b></p><table class='revlib-table' border='0'>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def markdown(self) -> str:
        cols = list(self.cells.columns)
        lines = [f"**{self.caption}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for i in range(len(self.cells)):
            vals = [f"**{self.cells.iloc[i][c]}**" if self.bold.iloc[i][c] else str(self.cells.iloc[i][c]) for c in cols]
            lines.append("| " + " | ".join(vals) + " |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> dict[str, Path]:
        out = {"csv": Path(out_dir) / f"{self.name}.csv", "md": Path(out_dir) / f"{self.name}.md",
               "html": Path(out_dir) / f"{self.name}.html"}
        io.write_text(out["csv"], self.numbers.to_csv(index=False))
        io.write_text(out["md"], self.markdown())
        io.write_text(out["html"], self.html())
        return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _wide(results: pd.DataFrame, stages: tuple[str, ...], tasks: list[str]) -> pd.DataFrame:
    sub = results[results["stage"].isin(stages)]
    rows = []
    for (model, train_set), grp in sub.groupby(["model", "train_set"], sort=False):
        row = {"model": model, "train_set": train_set}
        for t in tasks:
            hit = grp[grp["task"] == t]
            if len(hit):
                r = hit.iloc[0]
                row |= {f"{t}": r["accuracy"], f"{t}_ci_low": r["ci_low"], f"{t}_ci_high": r["ci_high"], f"{t}_n": int(r["problems"])}
        accs = [row[t] for t in tasks if t in row]
        row[AVERAGE] = sum(accs) / len(accs) if accs else float("nan")
        if "prompt" in grp:
            row["prompt"] = "; ".join(dict.fromkeys(grp["prompt"].dropna().astype(str))) or "bare problem"
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["model", "train_set", AVERAGE])


def _bold_best(numbers: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    bold = pd.DataFrame(False, index=numbers.index, columns=["model", "train set"] + cols)
    for _, idx in numbers.groupby("model").groups.items():
        for c in cols:
            if c in numbers:
                best = numbers.loc[idx, c].max()
                bold.loc[idx, c] = numbers.loc[idx, c] == best
    return bold.reset_index(drop=True)


def table1(results: pd.DataFrame, tasks: list[str]) -> Table:
    """Rows: model x SFT training set (and the base model when evaluated); columns: each benchmark (accuracy [95% CI] n=problems) and the average."""
    numbers = _wide(results, ("base", "sft"), tasks).reset_index(drop=True)
    cells = pd.DataFrame({"model": numbers["model"], "train set": numbers["train_set"]})
    for t in tasks:
        cells[t] = [f"{_pct(r[t])} [{_pct(r[f'{t}_ci_low'])}, {_pct(r[f'{t}_ci_high'])}] n={r[f'{t}_n']}" if t in r and pd.notna(r[t]) else "-"
                    for _, r in numbers.iterrows()]
    cells[AVERAGE] = [_pct(v) for v in numbers[AVERAGE]]
    bold = _bold_best(numbers, tasks + [AVERAGE])
    if "prompt" in numbers and numbers["prompt"].ne("bare problem").any():  # say which prompt each row got
        cells["prompt"] = numbers["prompt"].tolist()
        bold["prompt"] = False
    return Table("table1", numbers, cells, bold,
                 "Table 1: SFT accuracy (%) per training set, 95% Wilson interval and problem count; best per model in bold")


DPO_LABELS = {"dpo": "DPO", "dpo_per_step": "per-step DPO"}  # a named variant shows as "DPO <name>"


def table2(results: pd.DataFrame, tasks: list[str]) -> Table:
    """DPO on each SFT model: accuracy, its change from that SFT model with an up/down mark, and the average's relative change."""
    sft = _wide(results, ("sft",), tasks).set_index(["model", "train_set"])
    # directional DPO, per-step DPO and each named variant of dpo.variants (label dpo_<name>), in that order
    labels = ["dpo", "dpo_per_step"] + [s for s in dict.fromkeys(results["stage"])
                                        if str(s).startswith("dpo_") and s != "dpo_per_step"]
    dpo = pd.concat([_wide(results, (label,), tasks).assign(variant=DPO_LABELS.get(label, f"DPO {label[4:]}"))
                     for label in labels], ignore_index=True)
    order = {s: i for i, s in enumerate(dict.fromkeys(dpo["train_set"]))}  # each per-step row after its directional twin
    dpo = dpo.sort_values(["model", "train_set"], key=lambda c: c.map(order) if c.name == "train_set" else c,
                          kind="stable").reset_index(drop=True)
    rows, cell_rows = [], []
    for _, r in dpo.iterrows():
        key = (r["model"], r["train_set"])
        base = sft.loc[key] if key in sft.index else None
        row = {"model": r["model"], "train_set": r["train_set"], "variant": r["variant"]}
        cell = {"model": r["model"], "train set": f"{r['train_set']} + {r['variant']}"}
        for t in tasks + [AVERAGE]:
            acc = r.get(t)
            ref = base.get(t) if base is not None else None
            delta = acc - ref if acc is not None and ref is not None and pd.notna(acc) and pd.notna(ref) else None
            row |= {t: acc, f"{t}_sft": ref, f"{t}_delta": delta}
            if t != AVERAGE:
                row[f"{t}_n"] = r.get(f"{t}_n")
            text = "-" if acc is None or pd.isna(acc) else _pct(acc)
            if delta is not None:
                mark = "↑" if delta > 0 else "↓" if delta < 0 else "="
                text += f" ({100 * delta:+.1f} {mark})"
            if t == AVERAGE and delta is not None and ref:
                row["average_relative_change"] = delta / ref
                text += f" [{100 * delta / ref:+.1f}% rel.]"
            cell[t] = text
        rows.append(row)
        cell_rows.append(cell)
    numbers = pd.DataFrame(rows)
    cells = pd.DataFrame(cell_rows, columns=["model", "train set"] + tasks + [AVERAGE])
    bold = _bold_best(numbers, tasks + [AVERAGE]) if len(numbers) else pd.DataFrame(False, index=cells.index, columns=cells.columns)
    return Table("table2", numbers, cells, bold,
                 "Table 2: DPO accuracy (%) on each SFT model, change from that SFT model (points, ↑/↓) and relative change of the average")
