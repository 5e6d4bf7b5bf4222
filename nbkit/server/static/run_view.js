// A run's images: placeholders, previews, the final PNGs, CLIP scores.

import {callApi} from "./client.js";
import {$, TERMINAL, assetUrl, icon, el, announce, joinedToSource} from "./dom.js";
import {form, setBusy} from "./form.js";
import {startUpscale} from "./job_events.js";
import {openViewer} from "./lightbox.js";

const jobsList = $("#jobs");
const views = new Map();  // run folder name → RunView

export function viewFor(run, meta) {
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

/** The status line of a running job: the server's label in the one progress vocabulary (loading,
 * compiling, drawing with the time left, decoding pixels, saving); a status without one (polled) says what
 * it can. Never "Starting…" for the minutes a first batch compiles. */
export function stageText(status, percent) {
  const label = status.label ? status.label[0].toUpperCase() + status.label.slice(1) : "";
  if (label) return label;
  const images = status.images_total ? ` · ${status.images_done ?? 0} of ${status.images_total} images` : "";
  return percent ? `Drawing ${percent}%${images}`
    : `Compiling or waiting for the first tokens (the first batch of a size compiles first)${images}`;
}

export class RunView {
  constructor(run, {prompts = [], seed = null, label = null, from = null, join = null} = {}) {
    this.run = run;
    this.prompts = prompts;
    this.tiles = new Map();
    this.groups = new Map();
    this.seed = seed;
    this.label = label;
    this.from = from;  // an edit's source image (its URL), shown beside the run's title
    this.join = join;  // an extension: {url, direction, rows}, its tiles joined to the source
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
    this.cutNote = el("p", {class: "cut-note", hidden: true});
    this.note = el("p", {class: "rank-note", hidden: true}, el("span", {html: icon("star")}),
      "Ranked by CLIP, best first");
    this.body = el("div", {class: "groups"});
    this.node = el("article", {class: "run", "data-run": run},
      el("header", {class: "run-head"}, el("div", {class: "run-title"}, this.title, this.meta),
        this.rerankButton),
      this.status, this.error, this.cutNote, this.note, this.body);
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
      this.from && el("img", {class: "source-thumb", src: assetUrl(this.from), alt: "source image",
        title: "The image this run starts from"}),
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
    const thumb = el("button", {type: "button", class: "thumb", disabled: true}, this.joined(img, upscaled));
    const score = el("span", {class: "score", hidden: true});
    // Icons with a word under them on touch screens (no hover there to show a tooltip).
    const named = (name, word) => `${icon(name)}<span class="action-word">${word}</span>`;
    const download = el("a", {class: "icon-button", title: "Download PNG", html: named("download", "PNG")});
    const button = (title, name, word) =>
      el("button", {type: "button", class: "icon-button", title, html: named(name, word)});
    const vary = button("Variations", "vary", "Vary");
    const extend = button("Extend", "extend", "Extend");
    const upscale = button("Upscale 4×", "upscale", "4×");
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

  /** An extension's image joined to the image it continues (`this.join`, set when the page sent the
   * extension or reopened its run). */
  joined(img, upscaled) {
    return this.join && !upscaled ? joinedToSource(img, this.join) : img;
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
      this.stateText.textContent = stageText(status, percent);
      this.node.dataset.stage = status.stage ?? "";
      this.bar.classList.toggle("waiting", status.stage === "compiling" || !percent);
      this.bar.setAttribute("aria-valuenow", String(percent));
      this.barFill.style.width = `${percent}%`;
    }
    if (status.cut?.length) this.showCut(status.cut);
  }

  progress(event) {
    this.setStatus({state: "running", ...event});
    for (const preview of event.previews ?? []) this.setPreview(preview);
  }

  /** Tells the person who typed them which prompts the model cut to its text length. */
  showCut(cut) {
    const shown = cut.slice(0, 3).map((text) => `“${text.length > 60 ? `${text.slice(0, 57)}…` : text}”`);
    const more = cut.length > 3 ? ` and ${cut.length - 3} more` : "";
    this.cutNote.textContent = `${cut.length === 1 ? "This prompt is" : `${cut.length} prompts are`} longer `
      + `than the model reads and ${cut.length === 1 ? "was" : "were"} cut (only the beginning is drawn): `
      + `${shown.join("; ")}${more}. Shorten ${cut.length === 1 ? "it" : "them"} to choose what is kept.`;
    this.cutNote.hidden = false;
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
