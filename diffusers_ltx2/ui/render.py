"""HTML of the page's live parts: the queue (state, stage, progress per step) and the gallery of outputs (MP4 with
sound, WAV, their settings). Every user text is escaped; files are linked through the server's file route, which
serves the output folder only."""

from __future__ import annotations

import html
import os
import urllib.parse

from .jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job


def file_url(path: str) -> str:
    """The URL the page loads an output file from (Gradio's file route, limited to the output folder)."""
    return "/gradio_api/file=" + urllib.parse.quote(os.path.abspath(path))


def _bar(job: Job) -> str:
    fraction = job.step / job.steps if job.steps else 0.0
    return (f'<progress max="{job.steps or 1}" value="{job.step}" title="{fraction:.0%}"></progress>'
            if job.state == RUNNING else "")


def render_queue(jobs: list[Job]) -> str:
    """The queue as a table, newest first: id, mode, state, progress; a job's progress log (one entry per
    denoising step), its error or its cancel point."""
    if not jobs:
        return '<div id="ltx2-queue"><p>No jobs yet.</p></div>'
    rows = []
    for job in reversed(jobs):
        detail = ""
        if job.state == FAILED:
            detail = f'<div class="ltx2-job-error">error: {html.escape(job.error or "")}</div>'
        elif job.state == CANCELLED and job.cancel_step is not None:
            detail = (f'<div class="ltx2-job-cancel">cancel asked after step {job.cancel_step}, stopped after '
                      f'step {job.stopped_step}</div>')
        steps = " ".join(f"{s}:{i}/{n}" if job.stages > 1 else f"{i}/{n}" for s, i, n in job.events[-400:])
        log = f'<details><summary>progress ({len(job.events)} updates)</summary><code class="ltx2-steps">' \
              f'{html.escape(steps)}</code></details>' if job.events else ""
        rows.append(
            f'<tr class="ltx2-job" data-job="{job.id}" data-state="{job.state}" data-events="{len(job.events)}">'
            f"<td>#{job.id}</td><td>{html.escape(job.mode)}</td><td class=\"ltx2-state\">{job.state}</td>"
            f'<td><span class="ltx2-progress">{html.escape(job.progress_text())}</span> {_bar(job)}{detail}{log}'
            f"</td></tr>")
    return ('<div id="ltx2-queue"><table><thead><tr><th>job</th><th>mode</th><th>state</th><th>progress</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def render_gallery(jobs: list[Job]) -> str:
    """Finished outputs, newest first: a player (video with sound, or audio) and links to the file and its
    settings JSON (`ltx2 COMMAND --from-settings FILE` runs it again)."""
    done = [j for j in reversed(jobs) if j.state == DONE and j.output]
    if not done:
        return '<div id="ltx2-gallery"><p>Outputs appear here.</p></div>'
    items = []
    for job in done:
        url = file_url(job.output)
        name = html.escape(os.path.basename(job.output))
        player = (f'<audio controls preload="metadata" src="{url}"></audio>' if job.output.endswith((".wav", ".flac"))
                  else f'<video controls preload="metadata" src="{url}"></video>')
        rerun = html.escape(f"ltx2 {job.command} --from-settings {job.settings} --output "
                            f"new{os.path.splitext(job.output)[1]}")
        items.append(f'<figure class="ltx2-output" data-job="{job.id}">{player}<figcaption>#{job.id} '
                     f'{html.escape(job.mode)}: <a href="{url}" download>{name}</a> · '
                     f'<a href="{file_url(job.settings)}" download>settings</a>'
                     f'<br><code title="re-run from the command line">{rerun}</code></figcaption></figure>')
    return f'<div id="ltx2-gallery">{"".join(items)}</div>'


__all__ = ["render_queue", "render_gallery", "file_url", "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"]
