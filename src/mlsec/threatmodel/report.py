"""`mlsec threats report -o DIR`: the threat model as Markdown and HTML (mermaid data flow and attack
trees, STRIDE-AI per component, rankings, ATLAS and OWASP ML coverage, compliance map), open threats first."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import yaml

from mlsec.threatmodel.model import OWASP_ML, Node, Threat, ThreatModel

COMPLIANCE = Path(__file__).with_name("compliance.yaml")
STRIDE = ["Spoofing", "Tampering", "Repudiation", "Information disclosure", "Denial of service",
          "Elevation of privilege"]


def coverage(model: ThreatModel) -> tuple[int, int, int]:
    """(mitigated, partial, all) threats."""
    s = [t.status for t in model.threats]
    return s.count("mitigated"), s.count("partial"), len(s)


def _id(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _label(text: str) -> str:
    return text.replace('"', "'")


def data_flow(model: ThreatModel) -> str:
    lines = ["flowchart LR"]
    for b in model.boundaries:
        lines.append(f'  subgraph {b.id}["{_label(b.name)}"]')
        lines += [f'    {c.id}["{_label(c.name)}"]' for c in model.components if c.boundary == b.id]
        lines.append("  end")
    lines += [f'  {f.source} -->|"{_label(f.carries)}"| {f.target}' for f in model.flows]
    return "\n".join(lines)


def attack_tree(t: Threat) -> str:
    lines = ["flowchart TD"]

    def walk(node: Node, name: str) -> None:
        gate = f" [{node.gate}]" if node.gate != "LEAF" else ""
        lines.append(f'  {name}["{_label(node.goal)}{gate}"]')
        for i, child in enumerate(node.children):
            walk(child, f"{name}_{i}")
            lines.append(f"  {name} --> {name}_{i}")
    walk(t.attack_tree, _id(t.id))
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return out + [""]


def markdown(model: ThreatModel) -> str:
    done, partial, total = coverage(model)
    ranked = model.ranked()
    by_id = {t.id: t for t in model.threats}
    md = ["# mlsec threat report", "",
          f"Generated from `src/mlsec/threatmodel/threats.yaml` by `mlsec threats report`. **Coverage: {done} of "
          f"{total} threats mitigated ({100 * done / total:.0f}%), {partial} partial, {total - done - partial} open.** "
          "A threat is mitigated only when each control's removal makes a linked test fail "
          "(`mlsec threats check --prove`) and its attack test passes; open threats' attacks still succeed.", "",
          "## Data flow and trust boundaries", "", "```mermaid", data_flow(model), "```", ""]
    md += _table(["Boundary", "Why it is one"], [[b.name, b.why] for b in model.boundaries])
    md += ["## Assets", ""] + _table(["Id", "Asset", "Properties (CIA3-R)"],
                                     [[a.id, a.name, ", ".join(a.properties)] for a in model.assets])
    md += ["## Threats, open first", ""]
    md += _table(["Id", "Status", "Threat", "Component", "DREAD", "L×I", "Gap"],
                 [[t.id, t.status.upper() if t.status != "mitigated" else t.status, t.title, t.component,
                   f"{t.dread.score:.1f}", str(t.risk), t.gap] for t in ranked])
    md += ["## STRIDE-AI per component", ""]
    md += _table(["Component"] + STRIDE, [[c.name] + [", ".join(t.id for t in model.threats if t.component == c.id
                                                                 and s in t.stride) or "-" for s in STRIDE]
                                          for c in model.components])
    md += ["## Ranking by DREAD", ""] + _table(
        ["Id", "DREAD", "D/R/E/A/D", "Status"],
        [[t.id, f"{t.dread.score:.1f}", "/".join(str(v) for v in t.dread.model_dump().values()), t.status]
         for t in sorted(model.threats, key=lambda t: -t.dread.score)])
    md += ["## Ranking by likelihood × impact", ""] + _table(
        ["Id", "Likelihood", "Impact", "L×I", "Status"],
        [[t.id, str(t.likelihood), str(t.impact), str(t.risk), t.status]
         for t in sorted(model.threats, key=lambda t: (-t.risk, t.id))])
    atlas = sorted({a for t in model.threats for a in t.atlas})
    md += ["## MITRE ATLAS coverage", ""] + _table(
        ["Technique", "Threats", "Mitigated"],
        [[a, ", ".join(t.id for t in model.threats if a in t.atlas),
          ", ".join(t.id for t in model.threats if a in t.atlas and t.status == "mitigated") or "-"] for a in atlas])
    md += ["## OWASP ML Top 10 coverage", ""] + _table(
        ["Id", "Risk", "Threats", "Mitigated"],
        [[o, name, ", ".join(t.id for t in model.threats if o in t.owasp_ml) or "**none**",
          ", ".join(t.id for t in model.threats if o in t.owasp_ml and t.status == "mitigated") or "-"]
         for o, name in OWASP_ML.items()])
    md += ["## Threats in detail", ""]
    for t in ranked:
        md += [f"### {t.id} {t.title} ({t.status})", "",
               f"STRIDE-AI: {', '.join(t.stride)} · CIA3-R: {', '.join(t.cia3r)} · ATLAS: {', '.join(t.atlas)} · "
               f"OWASP: {', '.join(t.owasp_ml) or '-'} · DREAD {t.dread.score:.1f} · L×I {t.risk}", ""]
        if t.gap:
            md += [f"**Gap:** {t.gap}", ""]
        md += ["```mermaid", attack_tree(t), "```", "", "Attack tests: " + ", ".join(f"`{x}`" for x in t.attack_tests), ""]
        if t.controls:
            md += _table(["Control", "Where", "Proven by"],
                         [[c.what, f"`{c.code or c.rego}`", ", ".join(f"`{x.split('::')[-1]}`" for x in c.tests)]
                          for c in t.controls])
    md += compliance_section(by_id)
    return "\n".join(md) + "\n"


def compliance_section(by_id: dict[str, Threat]) -> list[str]:
    frameworks: dict[str, list[dict[str, Any]]] = yaml.safe_load(COMPLIANCE.read_text())["frameworks"]
    md = ["## Compliance map (credit scoring)", "",
          "From `src/mlsec/threatmodel/compliance.yaml`. Gaps are named, not implied.", ""]
    gaps = []
    for name, items in frameworks.items():
        md += [f"### {name}", ""]
        rows = []
        for o in items:
            unknown = [i for i in o.get("threats", []) if i not in by_id]
            if unknown:
                raise ValueError(f"compliance.yaml {name} {o['id']}: unknown threats {unknown}")
            threats = ", ".join(f"{i} ({by_id[i].status})" for i in o.get("threats", [])) or "-"
            rows.append([o["id"], o["obligation"], threats, o["status"], o.get("note", "")])
            if o["status"] != "covered":
                gaps.append(f"- {name} {o['id']} ({o['status']}): {o['obligation']}. {o.get('note', '')}")
        md += _table(["Ref", "Obligation", "Threats", "Status", "Note"], rows)
    return md + ["### Gaps", ""] + gaps + [""]


def to_html(md: str) -> str:
    """The Markdown wrapped for a browser: mermaid blocks rendered by mermaid.js, the rest as preformatted
    text blocks and tables (no Markdown library needed for a report that is mostly tables)."""
    body: list[str] = []
    code: list[str] = []
    table: list[str] = []
    in_code = False

    def flush_table() -> None:
        if table:
            rows = [r.strip("|").split(" | ") for r in table if not set(r) <= set("|-")]
            cells = ["<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                                      for c in r) + "</tr>" for i, r in enumerate(rows)]
            body.append("<table>" + "".join(cells) + "</table>")
            table.clear()
    for line in md.splitlines():
        if line.startswith("```"):
            if in_code:
                body.append(f'<pre class="mermaid">{html.escape(chr(10).join(code))}</pre>')
                code.clear()
            in_code = not in_code
            continue
        if in_code:
            code.append(line)
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if m := re.match(r"^(#+) (.*)", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{html.escape(m.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mlsec threat report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}</style>"
            "<script type='module'>import mermaid from 'https://cdn.jsdelivr.net/npm/mermaid@10/dist/mermaid.esm.min.mjs';"
            "mermaid.initialize({startOnLoad:true});</script></head><body>" + "\n".join(body) + "</body></html>\n")


def write(model: ThreatModel, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(model)
    (out / "threats.md").write_text(md)
    (out / "threats.html").write_text(to_html(md))
    return [out / "threats.md", out / "threats.html"]
