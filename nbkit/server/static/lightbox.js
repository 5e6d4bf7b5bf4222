// The lightbox (viewer), with variations and extending.

import {callApi} from "./client.js";
import {$, GRID_ROWS, smooth, assetUrl} from "./dom.js";
import {EDIT_ALIASES, clearErrors, showError} from "./field_errors.js";
import {fieldReader, form, samplingSettings, setBusy} from "./form.js";
import {follow, startUpscale} from "./job_events.js";
import {viewFor} from "./run_view.js";

const viewer = $("#viewer");
const editForm = $("#edit-form");
const editError = $("#edit-error");
const editSubmit = $("#edit-submit");
const band = $("#viewer-band");
const viewerImage = $("#viewer-img");
const shown = {view: null, tiles: [], index: 0, mode: null};

export function openViewer(view, tile, mode = null) {
  shown.view = view;
  shown.tiles = view.finalTiles();
  shown.index = Math.max(0, shown.tiles.indexOf(tile));
  clearErrors(editForm, editError);
  const perPrompt = Number(form.elements.n_images.value);
  editForm.elements.edit_n_images.value = Number.isInteger(perPrompt) && perPrompt > 0 ? perPrompt : 1;
  showImage();
  setMode(mode);
  if (!viewer.open) viewer.showModal();
  (mode ? editSubmit : $("#viewer-close")).focus();
}

function showImage() {
  const image = shown.tiles[shown.index]?.image;
  if (!image) return;
  const url = assetUrl(image.url);
  viewerImage.src = url;
  viewerImage.alt = image.prompt ?? "";
  $("#viewer-title").textContent = image.prompt ?? "";
  $("#viewer-meta").textContent = [`seed ${image.seed}`, `image ${(image.image_index ?? 0) + 1}`,
    image.upscaled_from && `upscaled from ${image.upscaled_from}`, `${image.run}/${image.file}`]
    .filter(Boolean).join(" · ");
  for (const id of ["#viewer-vary", "#viewer-extend", "#viewer-upscale"]) {
    $(id).hidden = Boolean(image.upscaled_from);  // an upscaled copy has no tokens to start from
  }
  const download = $("#viewer-download");
  download.href = url;
  download.download = image.file ?? "image.png";
  $("#viewer-prev").disabled = shown.index === 0;
  $("#viewer-next").disabled = shown.index >= shown.tiles.length - 1;
  viewer.classList.toggle("single", shown.tiles.length < 2);
}

function setMode(mode) {
  shown.mode = mode;
  editForm.hidden = !mode;
  for (const box of editForm.querySelectorAll("[data-mode]")) box.hidden = box.dataset.mode !== mode;
  $("#viewer-vary").setAttribute("aria-pressed", String(mode === "vary"));
  $("#viewer-extend").setAttribute("aria-pressed", String(mode === "extend"));
  editSubmit.textContent = mode === "extend" ? "Extend" : "Make variations";
  drawBand();
}

/** Shades the part of the image a variation or an extension draws anew. */
function drawBand() {
  const keep = Number(editForm.elements.keep_rows.value);
  const rows = Number(editForm.elements.rows.value);
  const direction = editForm.elements.direction.value;
  $("#keep_rows-out").textContent = keep;
  $("#rows-out").textContent = rows;
  const fraction = (n) => `${(100 * n) / GRID_ROWS}%`;
  Object.assign(band.style, {top: "0", left: "0", right: "0", bottom: "0"});
  viewerImage.style.transform = "";
  band.hidden = !shown.mode;
  if (shown.mode === "vary") {
    band.style.top = fraction(keep);
  } else if (shown.mode === "extend" && direction === "down") {
    viewerImage.style.transform = `translateY(-${fraction(rows)})`;
    band.style.top = fraction(GRID_ROWS - rows);
  } else if (shown.mode === "extend") {
    viewerImage.style.transform = `translateX(-${fraction(rows)})`;
    band.style.left = fraction(GRID_ROWS - rows);
  }
}

editForm.addEventListener("input", drawBand);
$("#viewer-vary").addEventListener("click", () => setMode(shown.mode === "vary" ? null : "vary"));
$("#viewer-extend").addEventListener("click", () => setMode(shown.mode === "extend" ? null : "extend"));
$("#viewer-close").addEventListener("click", () => viewer.close());
$("#viewer-upscale").addEventListener("click", () => {
  const tile = shown.tiles[shown.index];
  if (!tile?.image) return;
  viewer.close();
  startUpscale(shown.view, tile);
});
$("#viewer-prev").addEventListener("click", () => step(-1));
$("#viewer-next").addEventListener("click", () => step(1));
viewer.addEventListener("click", (event) => {
  if (event.target === viewer) viewer.close();  // a click on the backdrop
});
viewer.addEventListener("keydown", (event) => {
  if (event.target.matches("input, textarea")) return;
  if (event.key === "ArrowLeft") step(-1);
  if (event.key === "ArrowRight") step(1);
});

function step(by) {
  const next = shown.index + by;
  if (next < 0 || next >= shown.tiles.length) return;
  shown.index = next;
  clearErrors(editForm, editError);
  showImage();
}

editForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(editForm, editError);
  const image = shown.tiles[shown.index]?.image;
  if (!image || !shown.mode) return;
  const f = editForm.elements;
  const name = `${image.run}/${image.file}`;
  let body;
  try {
    // The form's settings: its seed, sampling settings and negative prompt (as the notebook form does).
    const {read, check} = fieldReader();
    body = {n_images: read(f.edit_n_images) ?? 1, seed: read(form.elements.seed), ...samplingSettings(read)};
    const negative = form.elements.negative_prompt.value.trim();
    if (negative) body.negative_prompt = negative;
    check();
  } catch (error) {
    showError(editForm, editError, error, EDIT_ALIASES);
    return;
  }
  let label;
  let join = null;
  if (shown.mode === "vary") {
    body.vary = {image: name, keep_rows: Number(f.keep_rows.value)};
    label = `Variations · ${f.keep_rows.value} rows kept`;
  } else {
    body.extend = {image: name, direction: f.direction.value, rows: Number(f.rows.value)};
    label = `Extended ${f.direction.value} · ${f.rows.value} new rows`;
    join = {url: image.url, direction: f.direction.value, rows: Number(f.rows.value)};
  }
  setBusy(editSubmit, true, "Sending…");
  try {
    const job = await callApi("api/jobs", body);
    viewer.close();
    const view = viewFor(job.run, {prompts: [image.prompt], seed: job.seed, label, from: image.url, join});
    view.expect(1, body.n_images);
    follow(job, view);
    view.node.scrollIntoView({behavior: smooth(), block: "nearest"});
  } catch (error) {
    showError(editForm, editError, error, EDIT_ALIASES);
  } finally {
    setBusy(editSubmit, false);
  }
});

viewer.addEventListener("close", () => {
  shown.mode = null;
  drawBand();
});
