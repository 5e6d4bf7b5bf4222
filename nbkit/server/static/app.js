// The page of `python -m nbkit serve`: a plain ES module (no framework, no build step) that uses only
// the server's JSON API. Every URL is relative to the page's folder, so behind a token (/t/<token>/)
// everything stays under that prefix.

import {setupTranslate} from "./translate.js";

const $ = (selector, root = document) => root.querySelector(selector);
const base = new URL(".", document.baseURI);
const apiUrl = (path) => new URL(path, base).href;
const TERMINAL = new Set(["done", "failed", "cancelled"]);
const GRID_ROWS = 16;  // an image is 16 × 16 tokens: variations keep rows, extending adds rows
const smooth = () => (matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth");

/** An image URL from the API ("/api/images/…") under the page's own prefix. */
function assetUrl(url) {
  if (!url || /^(data:|blob:|https?:)/.test(url)) return url;
  if (!url.startsWith("/") || (base.pathname !== "/" && url.startsWith(base.pathname))) {
    return new URL(url, base).href;
  }
  return new URL(url.replace(/^\/+/, ""), base).href;
}

const ICONS = {
  download: '<path d="M12 4v11m0 0l-4.5-4.5M12 15l4.5-4.5M5 19h14"/>',
  vary: '<path d="M4 7h11l-3-3M20 17H9l3 3"/><path d="M15 7a5 5 0 0 1 0 10" opacity=".5"/>',
  extend: '<rect x="4" y="4" width="10" height="10" rx="2"/><path d="M18 10v10H8" stroke-dasharray="2 2.5"/>',
  upscale: '<rect x="4" y="12" width="8" height="8" rx="1.5"/><path d="M13 4h7v7M20 4l-7.5 7.5"/>',
  star: '<path class="fill" d="M12 3.5l2.6 5.4 5.9.8-4.3 4.1 1 5.8-5.2-2.8-5.2 2.8 1-5.8-4.3-4.1 5.9-.8z"/>',
};
const icon = (name) => `<svg viewBox="0 0 24 24" aria-hidden="true">${ICONS[name]}</svg>`;

/** document.createElement with attributes ("class", "text", "html" for our own icons, "on…" listeners). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "html") node.innerHTML = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

// ---- talking to the server ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, field = null, status = 0) {
    super(message);
    this.field = field;
    this.status = status;
  }
}

async function callApi(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(apiUrl(path), options);
  } catch {
    throw new ApiError("Cannot reach the nbkit server: is it still running?");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    let message = data?.error || `The server answered ${response.status} ${response.statusText}.`.trim();
    const wait = response.headers.get("Retry-After");
    if (response.status === 429 && wait && !/try again/i.test(message)) message += ` Try again in ${wait} s.`;
    throw new ApiError(message, data?.field ?? null, response.status);
  }
  return data;
}

// ---- errors next to their fields ---------------------------------------------------------------

const FIELD_ALIASES = {prompt: "prompts", text: "prompts", num_images: "n_images"};
const EDIT_ALIASES = {n_images: "edit_n_images", vary: null, extend: null};

function clearErrors(form, banner) {
  for (const box of form.querySelectorAll(".field.invalid")) clearField(box);
  banner.hidden = true;
  banner.textContent = "";
}

function clearField(box) {
  box.classList.remove("invalid");
  box.querySelector("[aria-invalid]")?.removeAttribute("aria-invalid");
  box.querySelector(".field-error").textContent = "";
}

/** Shows the API's {"error", "field"} next to the field it names, or in the form's banner. */
function showError(form, banner, error, aliases = {}) {
  // "prompts[2]" → prompts, "vary.keep_rows" → keep_rows, then the form's own names.
  let field = error.field?.replace(/\[\d+\]$/, "") ?? null;
  if (field && field in aliases) field = aliases[field];
  else if (field) {
    field = FIELD_ALIASES[field] ?? field;
    const last = field.split(".").pop();
    field = last in aliases ? aliases[last] : last;
  }
  const box = field && form.querySelector(`.field[data-field="${CSS.escape(field)}"]`);
  if (!box || box.hidden) {
    banner.textContent = error.message;
    banner.hidden = false;
    return;
  }
  box.classList.add("invalid");
  box.closest("details")?.setAttribute("open", "");
  box.querySelector(".field-error").textContent = inWords(error.message, error.field, field);
  const control = box.querySelector("input, textarea");
  control?.setAttribute("aria-invalid", "true");
  control?.focus();
}

const FIELD_NAMES = {
  prompts: "Prompts", n_images: "Images per prompt", seed: "Seed", negative_prompt: "Negative prompt",
  temperature: "Temperature", top_k: "Top-k", top_p: "Top-p", condition_scale: "Condition scale",
  keep_rows: "Rows kept", rows: "New rows", direction: "Direction", edit_n_images: "Images",
};

/** The API's messages start with the field as it reads it ("n_images must be…", "prompts[1] is…");
 * next to the field, the name the page shows reads better. */
function inWords(message, apiField, field) {
  if (!apiField || !message.startsWith(apiField)) return message;
  const index = apiField.match(/\[(\d+)\]$/);
  const name = index ? `Prompt ${Number(index[1]) + 1}` : FIELD_NAMES[field];
  return name ? name + message.slice(apiField.length) : message;
}

for (const form of document.forms) {
  form.addEventListener("input", (event) => {
    const box = event.target.closest(".field.invalid");
    if (box) clearField(box);
  });
}

// ---- the form ----------------------------------------------------------------------------------

const form = $("#generate-form");
const promptsInput = $("#prompts");
const formError = $("#form-error");
const generateButton = $("#generate");
const translation = setupTranslate(form, callApi);  // the Translate choice and the English to check
let info = null;

function labelOf(input) {
  return (input.labels?.[0]?.firstChild?.textContent ?? input.name).trim();
}

/** A number input's value: null when empty, an ApiError naming the field when it is not a number. */
function numberIn(input) {
  const text = input.value.trim();
  if (input.validity.badInput || (text !== "" && !Number.isFinite(Number(text)))) {
    throw new ApiError(`${labelOf(input)} must be a number.`, input.name);
  }
  return text === "" ? null : Number(text);
}

function samplingSettings() {
  const f = form.elements;
  return {
    temperature: numberIn(f.temperature),
    top_k: numberIn(f.top_k),
    top_p: numberIn(f.top_p),
    condition_scale: numberIn(f.condition_scale) ?? info?.defaults?.condition_scale ?? 10,
  };
}

function readForm() {
  const prompts = promptsInput.value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!prompts.length) throw new ApiError("Type a prompt first (one per line).", "prompts");
  const f = form.elements;
  return {
    prompts,
    n_images: numberIn(f.n_images) ?? info?.defaults?.n_images ?? 1,
    seed: numberIn(f.seed),
    ...samplingSettings(),
    negative_prompt: f.negative_prompt.value.trim(),
  };
}

function setBusy(button, busy, text) {
  button.disabled = busy;
  button.classList.toggle("busy", busy);
  const label = button.querySelector(".label") ?? button;
  if (busy) {
    button.dataset.idle = label.textContent;
    label.textContent = text;
  } else if (button.dataset.idle) {
    label.textContent = button.dataset.idle;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (generateButton.disabled) return;  // Enter while the last one is still being sent
  clearErrors(form, formError);
  let body;
  try {
    body = readForm();
  } catch (error) {
    showError(form, formError, error);
    return;
  }
  setBusy(generateButton, true, "Sending…");
  try {
    body = await translation.prepare(body);
    if (!body) return;  // translated: the English is on show, to be checked; the next Generate draws it
    const job = await callApi("api/jobs", body);
    const view = viewFor(job.run, {prompts: body.prompts, seed: job.seed});
    view.expect(body.prompts.length, body.n_images);
    follow(job, view);
    view.node.scrollIntoView({behavior: smooth(), block: "nearest"});
  } catch (error) {
    showError(form, formError, error);
  } finally {
    setBusy(generateButton, false);
  }
});

promptsInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

$("#clear-seed").addEventListener("click", () => {
  form.elements.seed.value = "";
  clearField(form.elements.seed.closest(".field"));
});

$("#examples").addEventListener("click", (event) => {
  const chip = event.target.closest(".chip");
  if (!chip) return;
  promptsInput.value = chip.textContent;
  promptsInput.focus();
});

async function loadInfo() {
  const status = $("#server-info");
  try {
    info = await callApi("api/info");
  } catch (error) {
    status.className = "server offline";
    status.lastElementChild.textContent = "Server unreachable, retrying…";
    status.title = error.message;
    setTimeout(loadInfo, 3000);
    return;
  }
  status.className = "server online";
  const models = [info.model, info.vqgan, info.clip].filter(Boolean);
  status.title = [`nbkit ${info.version ?? ""}`, ...models].join("\n");
  // A model given as a folder shows as the folder's name.
  status.lastElementChild.textContent = models.map((name) => name.split(/[\\/]/).filter(Boolean).pop())
    .join(" · ");
  const f = form.elements;
  const defaults = info.defaults ?? {};
  if (info.max_images) {
    f.n_images.max = info.max_images;
    $("#edit_n_images").max = info.max_images;
  }
  if (defaults.n_images && f.n_images.value === f.n_images.defaultValue) f.n_images.value = defaults.n_images;
  const shown = (value, none) => (value == null ? none : String(value));
  f.temperature.placeholder = shown(defaults.temperature, "model default");
  f.top_k.placeholder = shown(defaults.top_k, "model default");
  f.top_p.placeholder = shown(defaults.top_p, "off");
  f.condition_scale.placeholder = shown(defaults.condition_scale, "10");
  document.body.classList.toggle("no-clip", !info.clip);
}

// ---- a run's images: placeholders, previews, the final PNGs, CLIP scores ------------------------

const jobsList = $("#jobs");
const announce = (text) => { $("#announce").textContent = text; };  // for screen readers
const views = new Map();  // run folder name → RunView

function viewFor(run, meta) {
  let view = views.get(run);
  if (!view) {
    view = new RunView(run, meta);
    views.set(run, view);
  } else {
    view.reset(meta);
  }
  jobsList.prepend(view.node);
  $("#empty").hidden = true;
  return view;
}

class RunView {
  constructor(run, {prompts = [], seed = null, label = null} = {}) {
    this.run = run;
    this.prompts = prompts;
    this.tiles = new Map();
    this.groups = new Map();
    this.seed = seed;
    this.label = label;
    this.title = el("h3");
    this.meta = el("p", {class: "run-meta"});
    this.rerankButton = el("button", {
      type: "button", class: "ghost small rerank", onclick: () => this.rerank(),
    }, el("span", {class: "label", text: "Rerank with CLIP"}));
    this.cancelButton = el("button", {type: "button", class: "ghost small cancel", text: "Cancel"});
    this.stateText = el("span", {class: "state-text"});
    this.barFill = el("span");
    this.bar = el("div", {
      class: "bar", role: "progressbar", "aria-label": "Progress",
      "aria-valuemin": "0", "aria-valuemax": "100",
    }, this.barFill);
    this.status = el("div", {class: "status"},
      el("div", {class: "status-line"}, this.stateText, this.cancelButton), this.bar);
    this.error = el("p", {class: "run-error", role: "alert", hidden: true});
    this.note = el("p", {class: "rank-note", hidden: true}, el("span", {html: icon("star")}),
      "Ranked by CLIP, best first");
    this.body = el("div", {class: "groups"});
    this.node = el("article", {class: "run", "data-run": run},
      el("header", {class: "run-head"}, el("div", {class: "run-title"}, this.title, this.meta),
        this.rerankButton),
      this.status, this.error, this.note, this.body);
    this.node.dataset.states = "";
    this.node.dataset.previews = "0";
    this.states = [];
    this.render();
  }

  reset(meta) {
    Object.assign(this, Object.fromEntries(Object.entries(meta).filter(([, value]) => value != null)));
    this.error.hidden = true;
    this.render();
  }

  render() {
    const prompts = this.prompts.length ? this.prompts : [...new Set([...this.tiles.values()]
      .map((tile) => tile.image?.prompt).filter(Boolean))];
    const more = prompts.length > 1 ? ` + ${prompts.length - 1} more` : "";
    this.title.textContent = `${prompts[0] ?? ""}${more}`;
    this.title.title = prompts.join("\n");
    const count = [...this.tiles.values()].filter((tile) => tile.image && !tile.image.upscaled_from).length;
    this.meta.replaceChildren(...[
      this.label && el("span", {text: this.label}),
      this.seed != null && el("button", {
        type: "button", class: "seed", title: "Use this seed in the form",
        onclick: () => { form.elements.seed.value = this.seed; form.elements.seed.focus(); },
      }, `seed ${this.seed}`),
      count ? el("span", {text: `${count} image${count === 1 ? "" : "s"}`}) : null,
      el("span", {class: "run-name", text: this.run}),
    ].filter(Boolean));
    for (const group of this.groups.values()) group.heading.hidden = this.groups.size < 2;
  }

  group(promptIndex, prompt) {
    let group = this.groups.get(promptIndex);
    if (!group) {
      const heading = el("h4", {text: prompt ?? this.prompts[promptIndex] ?? `Prompt ${promptIndex + 1}`});
      const grid = el("div", {class: "grid"});
      const node = el("section", {class: "group", "data-prompt": promptIndex}, heading, grid);
      group = {heading, grid, node};
      this.groups.set(promptIndex, group);
      const after = [...this.groups.keys()].filter((index) => index > promptIndex).sort((a, b) => a - b)[0];
      this.body.insertBefore(group.node, after === undefined ? null : this.groups.get(after).node);
    } else if (prompt && !group.heading.textContent) {
      group.heading.textContent = prompt;
    }
    return group.grid;
  }

  tile(promptIndex, imageIndex, prompt, upscaled = false) {
    const key = `${promptIndex}-${imageIndex}${upscaled ? "-up" : ""}`;
    let tile = this.tiles.get(key);
    if (tile) return tile;
    const img = el("img", {alt: "", decoding: "async"});
    const thumb = el("button", {type: "button", class: "thumb", disabled: true}, img);
    const score = el("span", {class: "score", hidden: true});
    const download = el("a", {class: "icon-button", title: "Download PNG", html: icon("download")});
    const button = (title, name) =>
      el("button", {type: "button", class: "icon-button", title, html: icon(name)});
    const vary = button("Variations", "vary");
    const extend = button("Extend", "extend");
    const upscale = button("Upscale 4×", "upscale");
    const badge = el("span", {class: "size-badge", hidden: !upscaled});
    const actions = upscaled ? [download] : [download, vary, extend, upscale];
    const node = el("figure", {class: `tile pending${upscaled ? " upscaled" : ""}`, "data-key": key}, thumb,
      el("figcaption", {class: "tile-bar"}, score, badge, el("span", {class: "spacer"}), ...actions));
    tile = {key, node, img, thumb, score, badge, download, vary, extend, upscale, image: null};
    thumb.addEventListener("click", () => openViewer(this, tile));
    vary.addEventListener("click", () => openViewer(this, tile, "vary"));
    extend.addEventListener("click", () => openViewer(this, tile, "extend"));
    upscale.addEventListener("click", () => startUpscale(this, tile));
    this.tiles.set(key, tile);
    const grid = this.group(promptIndex, prompt);
    const later = [...grid.children].find((other) => {
      const [p, i] = other.dataset.key.split("-").map(Number);
      return p === promptIndex && i > imageIndex;
    });
    grid.insertBefore(node, later ?? null);
    return tile;
  }

  /** Empty tiles for the images a new job will make. */
  expect(prompts, perPrompt) {
    for (let p = 0; p < prompts; p += 1) {
      for (let i = 0; i < perPrompt; i += 1) this.tile(p, i, this.prompts[p]);
    }
  }

  setImage(image) {
    const upscaled = Boolean(image.upscaled_from);
    const tile = this.tile(image.prompt_index ?? 0, image.image_index ?? 0, image.prompt, upscaled);
    tile.image = {run: this.run, ...image};
    const url = assetUrl(image.url);
    const label = `${image.prompt ?? "image"} (image ${(image.image_index ?? 0) + 1}${
      upscaled ? ", upscaled" : ""})`;
    if (upscaled) {
      tile.badge.textContent = "Upscaled";
      tile.img.addEventListener("load", () => {
        tile.badge.textContent = `${tile.img.naturalWidth}×${tile.img.naturalHeight}`;
      }, {once: true});
    }
    tile.img.src = url;
    tile.img.alt = image.prompt ?? "";
    tile.node.classList.remove("pending", "previewing");
    tile.thumb.disabled = false;
    tile.thumb.setAttribute("aria-label", `Enlarge ${label}`);
    tile.download.href = url;
    tile.download.download = image.file ?? "image.png";
    tile.download.setAttribute("aria-label", `Download ${label}`);
    tile.vary.setAttribute("aria-label", `Variations of ${label}`);
    tile.extend.setAttribute("aria-label", `Extend ${label}`);
    tile.upscale.setAttribute("aria-label", `Upscale ${label}`);
    this.render();
  }

  setPreview(preview) {
    const tile = this.tile(preview.prompt_index ?? 0, preview.image_index ?? 0);
    if (tile.image || !preview.data) return;
    tile.img.src = preview.data;
    tile.node.classList.add("previewing");
    this.node.dataset.previews = String(Number(this.node.dataset.previews) + 1);
  }

  noteState(state) {
    if (this.states.at(-1) !== state) this.states.push(state);
    this.node.dataset.states = this.states.join(" ");
    this.node.dataset.state = state;
  }

  /** A job status, or part of one: {state, position, tokens_done, tokens_total, images_done, …}. */
  setStatus(status) {
    const state = status.state ?? "running";
    this.noteState(state);
    this.status.hidden = TERMINAL.has(state);
    this.rerankButton.disabled = !TERMINAL.has(state);
    if (state === "queued") {
      const position = status.position;
      this.stateText.textContent = position > 1 ? `In the queue: position ${position}`
        : position === 1 ? "In the queue: next up" : "In the queue";
      this.bar.classList.add("waiting");
      this.bar.removeAttribute("aria-valuenow");
      this.barFill.style.width = "";
    } else if (state === "running" && (status.kind ?? (status.tiles_total != null ? "upscale" : "")) ===
      "upscale") {  // an upscale job (its status, or its progress event): windows done
      const total = status.tiles_total || 0;
      const percent = total ? Math.round((100 * (status.tiles_done || 0)) / total) : 0;
      this.stateText.textContent = total ? `Upscaling ${percent}% · ${status.tiles_done} of ${total} tiles`
        : "Upscaling…";
      this.bar.classList.toggle("waiting", !percent);
      this.bar.setAttribute("aria-valuenow", String(percent));
      this.barFill.style.width = `${percent}%`;
    } else if (state === "running") {
      const total = status.tokens_total || 0;
      const percent = total ? Math.round((100 * (status.tokens_done || 0)) / total) : 0;
      const images = status.images_total
        ? ` · ${status.images_done ?? 0} of ${status.images_total} images` : "";
      this.stateText.textContent = percent ? `Generating ${percent}%${images}` : `Starting…${images}`;
      this.bar.classList.toggle("waiting", !percent);
      this.bar.setAttribute("aria-valuenow", String(percent));
      this.barFill.style.width = `${percent}%`;
    }
  }

  progress(event) {
    this.setStatus({state: "running", ...event});
    for (const preview of event.previews ?? []) this.setPreview(preview);
  }

  finish(state, status = {}) {
    for (const image of status.images ?? []) this.setImage(image);
    this.noteState(state);
    this.status.hidden = true;
    this.rerankButton.disabled = false;
    for (const [key, tile] of this.tiles) {
      if (!tile.image) {
        tile.node.remove();
        this.tiles.delete(key);
      }
    }
    for (const [index, group] of this.groups) {
      if (!group.grid.children.length) {
        group.node.remove();
        this.groups.delete(index);
      }
    }
    if (state === "failed") this.showError(status.error || "The job failed.");
    if (state === "cancelled") this.showError("Cancelled.", "notice");
    this.render();
    const made = this.finalTiles().length;
    const what = status.kind === "upscale" ? "Upscaled" : `${made} image${made === 1 ? "" : "s"} ready`;
    if (state === "done") announce(`${what}: ${this.title.textContent}`);
  }

  showError(message, kind = "error") {
    this.error.textContent = message;
    this.error.className = kind === "error" ? "run-error" : "run-notice";
    this.error.hidden = false;
  }

  finalTiles() {
    return [...this.body.querySelectorAll(".tile")].map((node) => this.tiles.get(node.dataset.key))
      .filter((tile) => tile?.image);
  }

  async rerank() {
    setBusy(this.rerankButton, true, "Ranking…");
    this.error.hidden = true;
    try {
      const {ranking} = await callApi("api/rerank", {run: this.run});
      this.showRanking(ranking ?? []);
    } catch (error) {
      this.showError(error.message);
    } finally {
      setBusy(this.rerankButton, false);
    }
  }

  showRanking(ranking) {
    for (const group of ranking) {
      const grid = this.group(group.prompt_index, group.prompt);
      group.images.forEach((image, rank) => {
        const tile = this.tile(group.prompt_index, image.image_index, group.prompt);
        if (!tile.image) {
          this.setImage({prompt: group.prompt, prompt_index: group.prompt_index, run: this.run, ...image});
        }
        tile.score.textContent = Number(image.score).toFixed(3);
        tile.score.title = `CLIP score, rank ${rank + 1} of ${group.images.length}`;
        tile.score.hidden = false;
        tile.node.dataset.rank = String(rank + 1);
        tile.node.classList.toggle("best", rank === 0);
        grid.append(tile.node);
      });
    }
    this.note.hidden = false;
    this.node.classList.add("ranked");
  }
}

function follow(job, view) {
  view.setStatus(job);
  view.cancelButton.onclick = async () => {
    setBusy(view.cancelButton, true, "Cancelling…");
    try {
      const status = await callApi(`api/jobs/${encodeURIComponent(job.id)}/cancel`, {});
      if (TERMINAL.has(status.state)) view.finish(status.state, status);
    } catch (error) {
      view.showError(error.message);
    } finally {
      setBusy(view.cancelButton, false);
    }
  };
  const events = new EventSource(apiUrl(`api/jobs/${encodeURIComponent(job.id)}/events`));
  let ended = false;
  const listen = (type, handler) => events.addEventListener(type, (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    handler(data ?? {});
  });
  const end = (state) => (data) => {
    ended = true;
    events.close();
    view.finish(state, data);
    loadRuns();
  };
  listen("queued", (data) => view.setStatus({state: "queued", position: data.position}));
  listen("progress", (data) => view.progress(data));
  listen("image", (data) => view.setImage(data));
  listen("done", end("done"));
  listen("failed", end("failed"));
  listen("cancelled", end("cancelled"));
  events.onerror = () => {
    if (!ended && events.readyState === EventSource.CLOSED) poll(job.id, view);
  };
}

/** Follows a job by asking for its status, for when its event stream cannot be opened. */
async function poll(id, view) {
  for (;;) {
    let status;
    try {
      status = await callApi(`api/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      view.finish("failed", {error: error.message});
      return;
    }
    for (const image of status.images ?? []) view.setImage(image);
    if (TERMINAL.has(status.state)) {
      view.finish(status.state, status);
      loadRuns();
      return;
    }
    view.setStatus(status);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

/** Asks the server to upscale a tile's image (a job in the same queue) and follows it in the run's view:
 * its progress in the status line, the result as a tile of its own beside the source. */
async function startUpscale(view, tile) {
  const image = tile.image;
  if (!image || image.upscaled_from) return;
  const busy = (on) => {  // an icon button: no label to swap (setBusy would drop its icon)
    tile.upscale.disabled = on;
    tile.upscale.classList.toggle("busy", on);
  };
  busy(true);
  view.error.hidden = true;
  try {
    const job = await callApi("api/upscale", {run: image.run, file: image.file});
    follow(job, view);
    view.node.scrollIntoView({behavior: smooth(), block: "nearest"});
  } catch (error) {
    view.showError(error.message);
  } finally {
    busy(false);
  }
}

// ---- saved runs --------------------------------------------------------------------------------

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

async function loadRuns() {
  const problem = $("#runs-error");
  try {
    runs = ((await callApi("api/runs")).runs ?? []).filter((run) => run.images?.length);
    problem.hidden = true;
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
    return;
  }
  renderRuns();
}

function renderRuns() {
  runsList.replaceChildren(...runs.slice(0, runsShown).map((run) => {
    const images = (run.images ?? []).filter((image) => !image.upscaled_from);
    const upscaled = (run.images ?? []).length - images.length;
    const prompts = run.prompts ?? [...new Set(images.map((image) => image.prompt))];
    const thumbs = el("span", {class: "thumbs", "data-count": Math.min(images.length, 4)},
      ...images.slice(0, 4).map((image) =>
        el("img", {src: assetUrl(image.url), alt: "", loading: "lazy", decoding: "async"})));
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

function openRun(run) {
  const view = viewFor(run.name, {prompts: run.prompts ?? [], seed: run.images?.[0]?.seed ?? null});
  for (const image of run.images ?? []) view.setImage(image);
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

// ---- the lightbox, with variations and extending -----------------------------------------------

const viewer = $("#viewer");
const editForm = $("#edit-form");
const editError = $("#edit-error");
const editSubmit = $("#edit-submit");
const band = $("#viewer-band");
const viewerImage = $("#viewer-img");
const shown = {view: null, tiles: [], index: 0, mode: null};

function openViewer(view, tile, mode = null) {
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
    body = {n_images: numberIn(f.edit_n_images) ?? 1, seed: null, ...samplingSettings()};
  } catch (error) {
    showError(editForm, editError, error, EDIT_ALIASES);
    return;
  }
  let label;
  if (shown.mode === "vary") {
    body.vary = {image: name, keep_rows: Number(f.keep_rows.value)};
    label = `Variations · ${f.keep_rows.value} rows kept`;
  } else {
    body.extend = {image: name, direction: f.direction.value, rows: Number(f.rows.value)};
    label = `Extended ${f.direction.value} · ${f.rows.value} new rows`;
  }
  setBusy(editSubmit, true, "Sending…");
  try {
    const job = await callApi("api/jobs", body);
    viewer.close();
    const view = viewFor(job.run, {prompts: [image.prompt], seed: job.seed, label});
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

loadInfo();
loadRuns();
