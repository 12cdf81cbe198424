"""Every number a sentence quotes comes from a table.

The README and the suites' notes (``suites/*.md``) quote results of the committed reports:
differences, intervals, p-values, decisions, verdicts, ranks. (``suites/reproductions/README.md``
quotes the ``reproduction.md`` files that ``suites/reproductions/analyse.py`` writes, and
intervals that its functions compute from per-run tables; it is not covered here.) Each
such passage carries, in an HTML comment (invisible when rendered), the claims it makes, in a
small declarative form::

    <!-- check: tuned/comparisons task=bandit metric=score a=ppo b=grpo
         => mean_diff=0.020 ci_low=-0.015 ci_high=0.056 p_adjusted=1 decision=undecided -->

``REPORT/TABLE`` names ``reports/REPORT/tables/TABLE.csv``; the ``key=value`` pairs before ``=>``
select rows (exact string match, ``key^=text`` a prefix; shell quoting for values with
spaces); the pairs after it are
what the passage says of them:

- a numeric column ``col=x``: the selected row's value, rounded as ``x`` is printed (half a unit
  of its last digit: ``0.020`` holds values in [0.0195, 0.0205], ``2.5e-5`` in [2.45e-5,
  2.55e-5]); ``|col|=x`` compares the absolute value (a sentence that says "behind by 0.60");
- a text column ``col=word``: equal, ignoring case (``decision=undecided``, ``verdict="not
  supported"``);
- ``col:key=x``: the value of ``key`` in a column of ``key=value, ...`` text (tuning_chosen's
  ``params``);
- ``#rows=N``: the number of selected rows; ``#decided=N``: how many of them are decided
  (``a better`` or ``b better``; ``undecidable`` is not a decision); ``#a_better=N`` (any
  decision, ``_`` for a space): how many have that decision; ``#tests=N``: how many are tests
  (:func:`harness.report.compare.family_size`, the size of Holm's family);
- ``min(col)=x``, ``max(col)=x``: the least and the greatest value of a column over them,
  ``min(|col|)=x`` of its absolute value.

A selector's value ``x|y|z`` matches any of the three. A claim written ``~col=x`` is one the
passage says in words ("last", "all three", "none"): it is checked against the table like any
other but need not be printed.

A selector ``a=X b=Y`` also finds the row compared the other way round (``a=Y b=X``), with the
difference, its interval and the decision turned round, so a sentence may say "DPO − GRPO" where
the table holds GRPO − DPO. A numeric value a check asserts must also be printed in the passage
the comment belongs to (its paragraph, list item or table; a comment standing alone belongs to
the passage before it), so changing the sentence without its check fails too.

A passage that quotes a result — an interval ``[a, b]``, a p-value, a decision word, a verdict,
an ordinal rank — and carries no check fails :func:`test_every_passage_that_quotes_a_result_is_
checked`, unless it is on :data:`NOT_RESULTS` (passages whose numbers are settings, timings or
descriptions of the method, each with its reason). The committed reports are the source: when a
report is rebuilt and a sentence no longer holds, these tests fail and name it.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import stats as st
from harness.report.compare import family_size
from harness.report.sections.summary import is_decided

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"


def documents() -> list[Path]:
    """The prose that quotes results: the README and every Markdown file under suites/."""
    return [ROOT / "README.md", *sorted((ROOT / "suites").glob("*.md"))]


# --- passages -------------------------------------------------------------------------------

COMMENT = re.compile(r"<!--\s*check:(.*?)-->", re.DOTALL)
ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")


@dataclass
class Passage:
    """A paragraph, a list item or a table of a Markdown file, with the checks it carries."""

    path: Path
    line: int
    text: str
    checks: list[str] = field(default_factory=list)

    @property
    def prose(self) -> str:
        """The passage as rendered: without its comments."""
        return re.sub(r"<!--.*?-->", "", self.text, flags=re.DOTALL)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def passages(path: Path, text: str | None = None) -> list[Passage]:
    """Split a Markdown file into passages (code blocks, headings and images left out); a
    passage that is only comments gives its checks to the passage before it."""
    text = path.read_text(encoding="utf-8") if text is None else text
    out: list[Passage] = []
    current: list[str] = []
    start = 0
    fenced = False

    def flush() -> None:
        if not current:
            return
        body = "\n".join(current)
        checks = [c.strip() for c in COMMENT.findall(body)]
        rest = re.sub(r"<!--.*?-->", "", body, flags=re.DOTALL).strip()
        if not rest and out:
            out[-1].checks += checks
        elif rest:
            out.append(Passage(path, start, body, checks))
        current.clear()

    lines = text.splitlines()
    in_comment = False
    for i, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        is_table = line.startswith("|")
        starts_item = bool(ITEM.match(line)) and not in_comment
        boundary = (not line.strip() or line.startswith("#") or starts_item
                    or (current and is_table != current[-1].startswith("|")))
        if boundary and not in_comment:
            flush()
        if line.strip() and not line.startswith("#"):
            if not current:
                start = i
            current.append(line)
        if in_comment:
            in_comment = "-->" not in line
        else:
            in_comment = "<!--" in line and "-->" not in line.rsplit("<!--", 1)[-1]
    flush()
    return out


# --- checks ---------------------------------------------------------------------------------

TURNED = {"a better": "b better", "b better": "a better"}


@dataclass
class Check:
    """One ``<!-- check: ... -->`` claim: a table, a row selector and what is said of it."""

    table: str
    where: dict[str, str]
    said: list[tuple[str, str]]
    source: str

    @classmethod
    def parse(cls, source: str) -> Check:
        left, _, right = source.partition("=>")
        words = shlex.split(left)
        if not words or "/" not in words[0] or not right.strip():
            raise ValueError(f"a check reads 'REPORT/TABLE key=value ... => col=value ...': "
                             f"{source!r}")
        where = dict(w.split("=", 1) for w in words[1:])
        said = [tuple(w.split("=", 1)) for w in shlex.split(right)]
        if any(len(s) != 2 for s in said):
            raise ValueError(f"every claim of a check is col=value: {source!r}")
        return cls(words[0], where, said, source)  # type: ignore[arg-type]


def _printed_tolerance(printed: str) -> float:
    """Half a unit of the last printed digit of ``printed`` (``0.020``: 0.0005)."""
    mantissa, _, exponent = printed.lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _number(printed: str) -> float | None:
    try:
        return float(printed.replace("−", "-").replace(",", ""))
    except ValueError:
        return None


def load(table: str, reports: Path = REPORTS) -> pd.DataFrame:
    report, name = table.split("/", 1)
    return pd.read_csv(reports / report / "tables" / f"{name}.csv", dtype=str,
                       keep_default_na=False)


def select(frame: pd.DataFrame, where: dict[str, str]) -> tuple[pd.DataFrame, bool]:
    """The rows that match ``where``; for a pair ``a``, ``b`` with no row, the rows of ``b``,
    ``a`` and True (turned round)."""
    def rows(w: dict[str, str]) -> pd.DataFrame:
        mask = np.ones(len(frame), dtype=bool)
        for key, value in w.items():
            column = key.rstrip("^")
            if column not in frame:
                raise KeyError(f"no column {column!r}; columns: {', '.join(frame.columns)}")
            cells = frame[column]
            if key.endswith("^"):
                mask &= cells.str.startswith(value).to_numpy()
            else:
                mask &= cells.isin(value.split("|")).to_numpy()
        return frame[mask]

    found = rows(where)
    if found.empty and {"a", "b"} <= set(where):
        turned = rows({**where, "a": where["b"], "b": where["a"]})
        if not turned.empty:
            return turned, True
    return found, False


def value_of(row: pd.Series, column: str, turned: bool) -> str:
    """A cell as the sentence reads it: a turned-round pair negates the difference and swaps
    its interval's ends and the decision."""
    if ":" in column:
        column, key = column.split(":", 1)
        pairs = dict(p.strip().split("=", 1) for p in row[column].split(",") if "=" in p)
        return pairs[key]
    if turned and column in ("mean_diff", "ci_low", "ci_high"):
        other = {"ci_low": "ci_high", "ci_high": "ci_low"}.get(column, column)
        return repr(-float(row[other]))
    if turned and column == "decision":
        return TURNED.get(row[column], row[column])
    return row[column]


def failures(check: Check, reports: Path = REPORTS) -> list[str]:
    """What of ``check`` the committed table does not bear out (empty: it holds)."""
    frame = load(check.table, reports)
    rows, turned = select(frame, check.where)
    wrong = []
    for column, printed in check.said:
        column = column.lstrip("~")
        aggregate = re.fullmatch(r"(min|max)\((\|?)(\w+)\2\)", column)
        if column == "#rows":
            got = len(rows)
        elif column == "#decided":
            got = int(is_decided(rows["decision"]).sum())  # as the reports count them
        elif column == "#tests":
            got = family_size(pd.read_csv(StringIO(rows.to_csv(index=False))))
        elif column.startswith("#"):
            got = int((rows["decision"] == column[1:].replace("_", " ")).sum())
        elif aggregate:
            values = pd.to_numeric(rows[aggregate[3]])
            values = values.abs() if aggregate[2] else values
            got = float(values.min() if aggregate[1] == "min" else values.max())
        else:
            if len(rows) != 1:
                wrong.append(f"{len(rows)} rows match {check.where} in {check.table}, not one")
                break
            bare = column.strip("|")
            got = value_of(rows.iloc[0], bare, turned)
            if column.startswith("|") and _number(got) is not None:
                got = repr(abs(float(got)))
        expected = _number(printed)
        if expected is None:
            if str(got).strip().lower() != printed.strip().lower():
                wrong.append(f"{column}: the sentence says {printed!r}, the table {got!r}")
            continue
        actual = float(got) if str(got) != "" else math.nan
        if not abs(actual - expected) <= _printed_tolerance(printed) * (1 + 1e-9):
            wrong.append(f"{column}: the sentence says {printed}, the table {got}")
    return wrong


def printed_in(passage: Passage, printed: str) -> bool:
    """Whether the number ``printed`` is in the passage's prose (− and - alike, thousands
    separators and Markdown escapes ignored)."""
    prose = passage.prose.replace("−", "-").replace("\\", "")
    prose = re.sub(r"(?<=\d),(?=\d{3}\b)", "", prose)
    number = re.escape(printed.replace("−", "-").replace(",", ""))
    return re.search(rf"(?<![\d.]){number}(?!\d|\.\d)", prose) is not None


def all_checks() -> list[tuple[Passage, Check]]:
    return [(p, Check.parse(c)) for path in documents() for p in passages(path)
            for c in p.checks]


# --- which passages quote a result ----------------------------------------------------------

RESULT = re.compile(
    r"\\?\[\s*[−+-]?\d[\d.,e−-]*\s*,\s*[−+-]?\d"           # an interval [a, b]
    r"|\bp(?:_adj)?\s*(?:[=<≈]|Holm)\s*\d"                  # p = 0.04, p Holm 0.17
    r"|\b(?:un)?decided\b|\bdecidedly\b"                    # decisions
    r"|\b(?:not )?supported\b"                              # verdicts
    r"|\b\d+(?:st|nd|rd|th)\b(?! (?:century|percentile))"   # ranks
    r"|\bof (?:the )?\d[\d,]* [\w ]*?(?:comparisons|runs)\b",  # counts of results
    re.IGNORECASE)

# Passages that match RESULT but quote no result of a committed report, each with its reason.
# Keyed by the file and a phrase of the passage; every entry must still match one passage.
NOT_RESULTS: dict[tuple[str, str], str] = {
    ("README.md", "A report opens with a summary"):
        "describes what every report prints (decided comparisons); quotes none",
    ("README.md", "VADER's compound sentiment score"):
        "the range [−1, 1] of a task's gold reward: a definition, not a result",
    ("suites/zoo.md", "What the zoo does not show"):
        "says what a re-run's report would state; quotes no result",
}


def unchecked(path: Path, text: str | None = None) -> list[Passage]:
    """The passages of a file that quote a result and carry no check and no allow-listing."""
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    allowed = [phrase for (file, phrase) in NOT_RESULTS if file == rel]
    return [p for p in passages(path, text)
            if RESULT.search(re.sub(r"`[^`]*`", "", p.prose)) and not p.checks
            and not any(phrase in p.prose for phrase in allowed)]


# --- the tests ------------------------------------------------------------------------------

CHECKS = all_checks()


def test_the_prose_carries_checks():
    files = {p.path for p, _ in CHECKS}
    assert ROOT / "README.md" in files and ROOT / "suites" / "zoo.md" in files
    assert len(CHECKS) >= 60


@pytest.mark.parametrize("passage,check", CHECKS, ids=[f"{p.where()}" for p, _ in CHECKS])
def test_each_quoted_result_is_what_its_table_says(passage: Passage, check: Check):
    assert not failures(check), f"{passage.where()}: {check.source}: {failures(check)}"


@pytest.mark.parametrize("passage,check", CHECKS, ids=[f"{p.where()}" for p, _ in CHECKS])
def test_each_checked_number_is_printed_in_its_passage(passage: Passage, check: Check):
    missing = [printed for column, printed in check.said
               if _number(printed) is not None and not column.startswith("~")
               and not printed_in(passage, printed)]
    assert not missing, f"{passage.where()}: {missing} not in {passage.prose!r}"


def test_every_passage_that_quotes_a_result_is_checked():
    bare = [p for path in documents() for p in unchecked(path)]
    assert not bare, "passages that quote a result without a check:\n" + "\n".join(
        f"{p.where()}: {p.prose[:160]!r}" for p in bare)


def test_every_allow_listed_passage_still_exists_and_needs_it():
    for (file, phrase), reason in NOT_RESULTS.items():
        assert reason
        hits = [p for p in passages(ROOT / file) if phrase in p.prose]
        assert len(hits) == 1, (file, phrase, len(hits))
        assert RESULT.search(hits[0].prose), (file, phrase)


# --- the checks fail when the tables change -------------------------------------------------


def _copy_reports(tmp_path: Path) -> Path:
    for table in {c.table for _, c in CHECKS}:
        report, name = table.split("/", 1)
        target = tmp_path / report / "tables"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPORTS / report / "tables" / f"{name}.csv", target / f"{name}.csv")
    return tmp_path


def test_a_rebuilt_table_that_no_longer_bears_a_sentence_out_fails_it(tmp_path: Path):
    reports = _copy_reports(tmp_path)
    check = Check.parse("tuned/comparisons task=bandit metric=score a=ppo b=grpo "
                        "=> mean_diff=0.014 p_adjusted=0.62 decision=undecided")
    assert failures(check, reports) == []
    path = reports / "tuned" / "tables" / "comparisons.csv"
    frame = pd.read_csv(path)
    row = (frame["task"] == "bandit") & (frame["metric"] == "score") & (frame["a"] == "ppo") \
        & (frame["b"] == "grpo")
    frame.loc[row, "mean_diff"] += 0.001  # one unit of the printed digit: 0.015
    frame.to_csv(path, index=False)
    assert failures(check, reports) == ["mean_diff: the sentence says 0.014, the table "
                                        f"{float(frame.loc[row, 'mean_diff'].iloc[0])!r}"]
    frame.loc[row, "mean_diff"] -= 0.001
    frame.loc[row, ["p_adjusted", "decision"]] = [0.01, "a better"]
    frame.to_csv(path, index=False)
    assert [f.split(":")[0] for f in failures(check, reports)] == ["p_adjusted", "decision"]


def test_every_check_of_the_prose_fails_on_a_table_that_contradicts_it(tmp_path: Path):
    """Each check of the README and the notes, against a copy of its table in which the
    claimed cells are changed (numbers moved by ten printed units, words replaced, one row
    more): every one of them must then fail — none holds whatever the table says."""
    reports = _copy_reports(tmp_path)
    for passage, check in CHECKS:
        path = reports / check.table.split("/")[0] / "tables" / f"{check.table.split('/')[1]}.csv"
        original = path.read_bytes()
        frame = load(check.table)
        rows, turned = select(frame, check.where)
        for column, printed in check.said:
            column = column.lstrip("~")
            bare = column.strip("|").split(":")[0]
            if turned and bare in ("ci_low", "ci_high"):
                bare = {"ci_low": "ci_high", "ci_high": "ci_low"}[bare]
            if column.startswith(("#", "min(", "max(")):
                same = {k.rstrip("^"): v.split("|")[0] for k, v in check.where.items()}
                decision = column[1:].replace("_", " ") if column.startswith("#") \
                    and column not in ("#rows", "#decided", "#tests") else "a better"
                extra = frame.iloc[:1].assign(**same, decision=decision)
                if column.startswith(("min(", "max(")):
                    col = column[4:-1].strip("|")
                    extra[col] = repr(float(printed) + (-1 if column[:3] == "min" else 1)
                                      * (abs(float(printed)) + 1))
                frame = pd.concat([frame, extra], ignore_index=True)
            elif _number(printed) is not None:
                step = 10 * _printed_tolerance(printed) * 2
                cell = frame.loc[rows.index[0], bare]
                if ":" in column:
                    key = column.split(":", 1)[1]
                    old = re.search(rf"{key}=([^,]+)", cell)
                    assert old, (check.source, cell)
                    frame.loc[rows.index[0], bare] = cell.replace(
                        old[0], f"{key}={float(old[1]) + step!r}")
                else:
                    moved = float(cell) + step if cell != "" else 1e9
                    frame.loc[rows.index[0], bare] = repr(moved)
            else:
                frame.loc[rows.index[0], bare] = "something else"
        frame.to_csv(path, index=False)
        assert failures(check, reports), f"{passage.where()}: {check.source} holds anyway"
        path.write_bytes(original)


def test_a_result_quoted_without_a_check_is_found(tmp_path: Path):
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert unchecked(readme, text) == []
    added = text + ("\nOn the bandit PPO beats GRPO by 0.3 \\[0.1, 0.5\\], Holm-adjusted "
                    "p = 0.01.\n\nGRPO is 3rd of the five.\n\nOf the 20 comparisons, all "
                    "are undecided.\n\nA learning rate of 0.05 and 16 trials.\n")
    found = [p.prose.strip()[:20] for p in unchecked(readme, added)]
    assert found == ["On the bandit PPO be", "GRPO is 3rd of the f", "Of the 20 comparison"]


# --- a table of the notes generated from the report's tables --------------------------------

NAMES = {"ppo": "PPO", "grpo": "GRPO", "gspo": "GSPO", "rloo": "RLOO",
         "reinforce-pp": "REINFORCE++", "online-dpo": "online DPO", "bon": "best-of-n",
         "dpo": "DPO", "ipo": "IPO",
         "rdpo": "rDPO", "cdpo": "cDPO", "kto": "KTO", "simpo": "SimPO", "orpo": "ORPO"}


def zoo_ranking_table(reports: Path = REPORTS) -> list[str]:
    """The rank table of suites/zoo.md, from ``zoo/ranking_per_task.csv`` (bandit, token) and
    ``zoo-lm/ranking_iqm.csv`` (tiny-lm, the only task of its suite): each column the labels in
    rank order with their mean score to two decimals and the 95% bootstrap range of the rank."""
    def cell(row: pd.Series) -> str:
        low, high = round(float(row["rank_low"])), round(float(row["rank_high"]))
        ranks = f"{low}" if low == high else f"{low}–{high}"
        return f"{NAMES[row['label']]} {row['mean']:.2f} ({ranks})".replace(" -", " −")

    per_task = pd.read_csv(reports / "zoo" / "tables" / "ranking_per_task.csv")
    lm = pd.read_csv(reports / "zoo-lm" / "tables" / "ranking_iqm.csv")
    columns = [[cell(r) for _, r in per_task[per_task["task"] == task]
                .sort_values(["rank", "label"]).iterrows()] for task in ("bandit", "token")]
    columns.append([cell(r) for _, r in lm.sort_values(["rank", "label"]).iterrows()])
    return [f"| {i} | " + " | ".join(col[i - 1] for col in columns) + " |"
            for i in range(1, len(columns[0]) + 1)]


def test_the_zoo_rank_table_is_the_ranking_tables():
    notes = (ROOT / "suites" / "zoo.md").read_text(encoding="utf-8").splitlines()
    header = notes.index("| rank | bandit | token | tiny-lm |")
    expected = zoo_ranking_table()
    assert len(expected) == 14
    assert notes[header + 2:header + 2 + len(expected)] == expected
    assert not notes[header + 2 + len(expected)].startswith("|")


def test_the_zoo_rank_table_fails_on_a_reordered_ranking(tmp_path: Path):
    for report, name in (("zoo", "ranking_per_task"), ("zoo-lm", "ranking_iqm")):
        (tmp_path / report / "tables").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPORTS / report / "tables" / f"{name}.csv",
                    tmp_path / report / "tables" / f"{name}.csv")
    before = zoo_ranking_table(tmp_path)
    path = tmp_path / "zoo" / "tables" / "ranking_per_task.csv"
    frame = pd.read_csv(path)
    token = frame["task"] == "token"
    frame.loc[token & (frame["rank"] == 1), "rank"] = 99  # DPO falls from first to last
    frame.to_csv(path, index=False)
    after = zoo_ranking_table(tmp_path)
    assert before != after
    assert after[0].split(" | ")[2] == "rDPO 0.62 (2–3)"
    assert after[-1].split(" | ")[2] == "DPO 0.62 (1)"


# --- the standard deviation the method text gives Bonett's interval for ---------------------


def test_the_stability_table_prints_bonett_s_interval_of_the_spread_across_instances(
        tmp_path: Path):
    """The method text cites Bonett's (2006) interval for standard deviations: the stability
    table prints it, for the spread of the instances' mean final gold, and the number printed
    and the one in stability.csv are :func:`harness.report.stats.std_interval` of those
    instance means, recomputed here from the report's per-run table."""
    from harness.report import write_report
    from tests.test_report import make_store

    report = write_report(make_store(tmp_path), tmp_path / "report", figures=False)
    md = (report / "index.md").read_text(encoding="utf-8")
    assert "Bonett's (2006) interval for standard deviations (the stability table" in md
    section = md.split("## Stability", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    column = header.index("spread across instances \\[95% CI\\]")
    label_at = header.index("label")
    printed = {cells[label_at]: cells[column] for cells in
               ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    runs = pd.read_csv(report / "tables" / "runs.csv")
    counted = runs[runs["status"].isin(("done", "diverged"))]
    numbers = pd.read_csv(report / "tables" / "stability.csv").set_index("label")
    with_interval = 0
    for label in ("ppo", "grpo", "dpo"):
        means = counted[counted["label"] == label].groupby("seed")["final_gold_reward"].mean()
        expected = st.std_interval(means.dropna().to_numpy())
        assert printed[label] == expected.format(3).replace("[", "\\[").replace("]", "\\]")
        row = numbers.loc[label]
        assert (row["instance_std"], row["instance_std_low"], row["instance_std_high"]) == \
            pytest.approx((expected.value, expected.low, expected.high), rel=1e-12, nan_ok=True)
        assert expected.has_interval == (means.notna().sum() >= 5)
        if expected.has_interval:  # from 5 instances: Bonett's, not the chi-square interval
            with_interval += 1
            assert expected.low < expected.value < expected.high
            chi2 = st.chi2_std_interval(means.dropna().to_numpy())
            assert (expected.low, expected.high) != pytest.approx((chi2.low, chi2.high))
            assert " \\[" in printed[label]
    assert with_interval == 1  # dpo; ppo and grpo lose an instance to a failed or NaN run
