// Errors shown next to the fields they name (or in the form's banner).

const FIELD_ALIASES = {prompt: "prompts", text: "prompts", num_images: "n_images"};
export const EDIT_ALIASES = {n_images: "edit_n_images", vary: null, extend: null};

export function clearErrors(form, banner) {
  for (const box of form.querySelectorAll(".field.invalid")) clearField(box);
  banner.hidden = true;
  banner.textContent = "";
}

export function clearField(box) {
  box.classList.remove("invalid");
  box.querySelector("[aria-invalid]")?.removeAttribute("aria-invalid");
  box.querySelector(".field-error").textContent = "";
}

/** Shows the API's {"error", "field"} next to the field it names, or in the form's banner; every one
 * of `error.errors` when there are several (all at once: fixing one does not reveal the next). */
export function showError(form, banner, error, aliases = {}) {
  const all = error.errors?.length ? error.errors : [error];
  const boxes = all.map((one) => showOne(form, banner, one, aliases)).filter(Boolean);
  boxes[0]?.querySelector("input, textarea")?.focus();
}

function showOne(form, banner, error, aliases) {
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
    banner.textContent = banner.hidden ? error.message : `${banner.textContent} ${error.message}`;
    banner.hidden = false;
    return null;
  }
  const text = box.querySelector(".field-error");
  const message = inWords(error.message, error.field, field);
  text.textContent = box.classList.contains("invalid") ? `${text.textContent} ${message}` : message;
  box.classList.add("invalid");
  box.closest("details")?.setAttribute("open", "");
  box.querySelector("input, textarea")?.setAttribute("aria-invalid", "true");
  return box;
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
