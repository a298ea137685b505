"""The Markdown pages as HTML for the report: the Markdown the summary and the tables are written in."""

from onion.report.html import markdown_to_html


def test_headings_paragraphs_lists_tables_and_inline_marks():
    page = markdown_to_html(
        "# Table 4: probes\n\n"
        "| kind | N=48 |\n|---|---|\n| linear | 0.02 (0.01 ± 0.00) |\n\n"
        "## 2. Claim\n**NOT reproduced.** Criterion: at most the paper's *mean* + 0.05 (`a*b`).\n\n"
        "- linear N=48: 0.02 < 0.15 ✓\n  and a continued line\n- onion: 1 < 2\n"
    )
    assert "<h1>Table 4: probes</h1>" in page and "<h2>2. Claim</h2>" in page
    assert "<tr><th>kind</th><th>N=48</th></tr>" in page
    assert "<tr><td>linear</td><td>0.02 (0.01 ± 0.00)</td></tr>" in page and "---" not in page
    assert "<p><strong>NOT reproduced.</strong> Criterion: at most the paper's <em>mean</em> + 0.05 " \
           "(<code>a*b</code>).</p>" in page
    assert "<li>linear N=48: 0.02 &lt; 0.15 ✓ and a continued line</li>" in page
    assert "<li>onion: 1 &lt; 2</li>" in page
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page


def test_the_verdicts_of_a_summary_page():
    from onion.report.html import verdicts

    page = ("# What the results reproduce\n\nModels: ...\n\n## The contrast: both directions\n\n"
            "**NOT reproduced.** Criterion: ...\n\n## 1. All GRUs learn the task.\n\n"
            "**consistent so far, not fully testable here.** Criterion: ...\n\n- N=8: 0.1\n\n"
            "## Where this run differs\n\n- 2 seeds\n\n## Beyond the paper: cells\n\nCriterion: ...\n\n"
            "### gru, autoregressive N = 8: **onion signature**\n\n- linear 0.01\n\n"
            "### lstm, autoregressive N = 8: **not judged**\n")
    assert verdicts(page).splitlines() == [
        "- **NOT reproduced**: The contrast: both directions",
        "- **consistent so far, not fully testable here**: 1. All GRUs learn the task.",
        "- Beyond the paper: cells: gru, autoregressive N = 8 **onion signature**; "
        "lstm, autoregressive N = 8 **not judged**",
    ]
