// The saved runs: listed, opened into the gallery.

import {callApi} from "./client.js";
import {$, TERMINAL, smooth, assetUrl, el, joinedToSource} from "./dom.js";
import {viewFor} from "./run_view.js";

const runsList = $("#runs");
const moreRuns = $("#more-runs");
let runs = [];
let runsShown = 10;

function when(created) {
  if (created == null) return "";
  const seconds = typeof created === "number" && created < 1e12;  // else milliseconds, or ISO text
  const date = new Date(seconds ? created * 1000 : created);
  if (Number.isNaN(date.getTime())) return String(created);
  const minutes = Math.round((Date.now() - date.getTime()) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  if (minutes < 24 * 60) return `${Math.round(minutes / 60)} h ago`;
  return date.toLocaleDateString(undefined, {month: "short", day: "numeric", year: "numeric"});
}

let shownKey = null;  // what the list shows now: run names and image counts

export async function loadRuns({quiet = false} = {}) {
  const problem = $("#runs-error");
  try {
    runs = ((await callApi("api/runs")).runs ?? []).filter((run) => run.images?.length);
    problem.hidden = true;
  } catch (error) {
    if (quiet) return;  // a background refresh: the next one tries again
    problem.textContent = error.message;
    problem.hidden = false;
    return;
  }
  const key = JSON.stringify(runs.map((run) => [run.name, run.images.length]));
  if (quiet && key === shownKey) return;
  shownKey = key;
  renderRuns();
}

function renderRuns() {
  runsList.replaceChildren(...runs.slice(0, runsShown).map((run) => {
    const images = (run.images ?? []).filter((image) => !image.upscaled_from);
    const upscaled = (run.images ?? []).length - images.length;
    const prompts = run.prompts ?? [...new Set(images.map((image) => image.prompt))];
    const thumb = (image) =>
      el("img", {src: assetUrl(image.url), alt: "", loading: "lazy", decoding: "async"});
    const {join} = editMeta(images);
    const thumbs = join  // an extension: its first piece joined to its source, as the opened run shows it
      ? el("span", {class: "thumbs", "data-count": 1}, joinedToSource(thumb(images[0]), join))
      : el("span", {class: "thumbs", "data-count": Math.min(images.length, 4)},
        ...images.slice(0, 4).map(thumb));
    const more = prompts.length > 1 ? ` + ${prompts.length - 1} more` : "";
    const details = el("span", {class: "run-text"},
      el("span", {class: "run-prompt", text: `${prompts[0] ?? run.name}${more}`}),
      el("span", {class: "muted", text: [`${images.length} image${images.length === 1 ? "" : "s"}`,
        upscaled && `${upscaled} upscaled`, when(run.created)].filter(Boolean).join(" · ")}));
    return el("li", {class: "run-item", "data-run": run.name},
      el("button", {type: "button", class: "run-open", title: run.name, onclick: () => openRun(run)},
        thumbs, details));
  }));
  $("#runs-empty").hidden = runs.length > 0;
  moreRuns.hidden = runs.length <= runsShown;
}

/** What the run view shows of an edit run, from its images' `edited_from` (the source the server found
 * for them): the source beside the title and, for an extension, its pieces joined to the source — as the
 * page shows them right after the edit (lightbox.js). */
function editMeta(images) {
  const source = images.find((image) => image.edited_from?.url)?.edited_from;
  if (!source) return {};
  const meta = {from: source.url};
  if (source.edit === "extend") {
    meta.label = `Extended ${source.direction} · ${source.rows} new rows`;
    meta.join = {url: source.url, direction: source.direction, rows: source.rows};
  } else if (source.edit === "vary") {
    meta.label = `Variations · ${source.rows} rows kept`;
  } else {
    meta.label = "Filled";
  }
  return meta;
}

function openRun(run) {
  const images = run.images ?? [];
  const view = viewFor(run.name, {prompts: run.prompts ?? [], seed: images[0]?.seed ?? null,
    ...editMeta(images)});
  for (const image of images) view.setImage(image);
  if (!view.states.length || TERMINAL.has(view.node.dataset.state)) view.finish("done");
  view.node.scrollIntoView({behavior: smooth(), block: "start"});
  view.node.classList.remove("flash");
  requestAnimationFrame(() => view.node.classList.add("flash"));
}

moreRuns.addEventListener("click", () => {
  runsShown += 20;
  renderRuns();
});
$("#refresh-runs").addEventListener("click", loadRuns);

// Live: runs made by another client (or the CLI into the same folder) appear without a click. Polled while
// the page is visible; redrawn only when the list changed.
const RUNS_POLL_MS = 10_000;
setInterval(() => {
  if (document.visibilityState === "visible") loadRuns({quiet: true});
}, RUNS_POLL_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") loadRuns({quiet: true});
});
