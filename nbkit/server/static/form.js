// The generate form: its fields read into a job body, sent, followed; the server's defaults.

import {ApiError, callApi} from "./client.js";
import {$, smooth} from "./dom.js";
import {clearErrors, clearField, showError} from "./field_errors.js";
import {follow} from "./job_events.js";
import {viewFor} from "./run_view.js";
import {setupTranslate} from "./translate.js";

export const form = $("#generate-form");
const promptsInput = $("#prompts");
const formError = $("#form-error");
const generateButton = $("#generate");
const translation = setupTranslate(form, callApi);  // the Translate choice and the English to check
export let info = null;

function labelOf(input) {
  return (input.labels?.[0]?.firstChild?.textContent ?? input.name).trim();
}

/** A number input's value: null when empty, an ApiError naming the field when it is not a number or
 * outside the input's own min, max and whole-number step (the server checks again, and says more). */
export function numberIn(input) {
  const text = input.value.trim();
  const name = labelOf(input);
  if (input.validity.badInput || (text !== "" && !Number.isFinite(Number(text)))) {
    throw new ApiError(`${name} must be a number.`, input.name);
  }
  if (input.validity.rangeUnderflow) throw new ApiError(`${name} must be at least ${input.min}.`, input.name);
  if (input.validity.rangeOverflow) throw new ApiError(`${name} must be at most ${input.max}.`, input.name);
  if (input.validity.stepMismatch && input.step === "1") {
    throw new ApiError(`${name} must be a whole number.`, input.name);
  }
  return text === "" ? null : Number(text);
}

/** Reads fields without stopping at the first bad one: `read(input)` is numberIn, its errors kept; `check()`
 * throws one ApiError that carries them all (so that every one is shown at once). */
export function fieldReader() {
  const errors = [];
  const read = (input) => {
    try {
      return numberIn(input);
    } catch (error) {
      errors.push(error);
      return null;
    }
  };
  const fail = (message, field) => errors.push(new ApiError(message, field));
  const check = () => {
    if (errors.length) throw new ApiError(errors[0].message, errors[0].field, 0, errors);
  };
  return {read, fail, check};
}

export function samplingSettings(read = numberIn) {
  const f = form.elements;
  return {
    temperature: read(f.temperature),
    top_k: read(f.top_k),
    top_p: read(f.top_p),
    condition_scale: read(f.condition_scale) ?? info?.defaults?.condition_scale ?? 10,
  };
}

function readForm() {
  const {read, fail, check} = fieldReader();
  const prompts = promptsInput.value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!prompts.length) fail("Type a prompt first (one per line).", "prompts");
  const f = form.elements;
  const body = {
    prompts,
    n_images: read(f.n_images) ?? info?.defaults?.n_images ?? 1,
    seed: read(f.seed),
    ...samplingSettings(read),
    negative_prompt: f.negative_prompt.value.trim(),
  };
  check();
  return body;
}

export function setBusy(button, busy, text) {
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

const MODEL_NAMES = {
  mini: "DALL·E mini", mega: "DALL·E Mega", "mega-fp16": "DALL·E Mega (fp16)", "dalle-mini": "DALL·E mini",
  "dalle-mega": "DALL·E Mega",
};

/** A served model's name as people know it: a registered name, else its folder's or repository's name. */
function modelName(model) {
  if (!model) return "";
  const last = String(model).split(/[\\/]/).filter(Boolean).pop() ?? "";
  return MODEL_NAMES[model] ?? MODEL_NAMES[last] ?? last;
}

export async function loadInfo() {
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
  const served = modelName(info.model);
  if (served) {  // the tagline names the model this server draws with
    $("#tagline").textContent = served;
    document.title = `nbkit · ${served}`;
  }
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
