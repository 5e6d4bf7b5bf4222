// The page's translation step: a Translate choice beside the prompts, and the English the server will
// draw, shown for checking (and editing) before drawing. A prompt in another script is not drawn on the
// first Generate: POST api/translate answers its English, shown in an editable field; the next Generate
// sends the typed prompts with that English (english_prompts), and the server records both. English
// prompts go straight through and load no translator. app.js calls `prepare(body)` before each job.

const FIELD_HTML = `
  <div class="field" data-field="translate">
    <label for="translate">Translate <span class="label-note">prompts not in English</span></label>
    <select id="translate" name="translate" aria-describedby="translate-error">
      <option value="auto">auto (by the prompt's script)</option>
      <option value="off">off (draw as typed)</option>
    </select>
    <p class="field-error" id="translate-error" aria-live="polite"></p>
  </div>
  <div class="field english" data-field="english_prompts" hidden>
    <label for="english_prompts">English to draw <span class="label-note">edit it if you like</span></label>
    <textarea id="english_prompts" name="english_prompts" rows="2" spellcheck="true"
              aria-describedby="english_prompts-error translate-note"></textarea>
    <label for="english_negative_prompt" class="english-negative" hidden>English negative prompt</label>
    <input id="english_negative_prompt" name="english_negative_prompt" type="text" class="english-negative"
           hidden>
    <p class="hint" id="translate-note" aria-live="polite"></p>
    <p class="field-error" id="english_prompts-error" aria-live="polite"></p>
  </div>`;

/** Like nbkit.text.translate.scripts: a letter past Latin (U+0250 on) is one a translator reads. */
export function needsTranslation(text) {
  return [...text].some((char) => char.codePointAt(0) >= 0x250 && /\p{L}/u.test(char));
}

const lines = (text) => text.split("\n").map((line) => line.trim()).filter(Boolean);

/** Puts the Translate choice and the English field into `form`, after the negative prompt. `callApi`:
 * app.js's (path, body) → JSON, throwing its ApiError (with the field the server named). */
export function setupTranslate(form, callApi) {
  const anchor = form.querySelector('.field[data-field="negative_prompt"]');
  anchor.insertAdjacentHTML("afterend", FIELD_HTML);
  const choice = form.querySelector("#translate");
  const box = form.querySelector('.field[data-field="english_prompts"]');
  const english = form.querySelector("#english_prompts");
  const negative = form.querySelector("#english_negative_prompt");
  const note = form.querySelector("#translate-note");
  let shown = null;  // the prompts, negative prompt and choice whose English is on show

  callApi("api/info").then((info) => {
    for (const name of info.translators ?? []) choice.append(new Option(name, name));
  }).catch(() => {});  // app.js says when the server cannot be reached

  const keyOf = (body, chosen) => JSON.stringify([body.prompts, body.negative_prompt ?? "", chosen]);

  function hide() {
    shown = null;
    box.hidden = true;
    note.textContent = "";
  }

  function show(answer, body, chosen) {
    english.value = answer.english_prompts.join("\n");
    english.rows = Math.min(6, Math.max(2, answer.english_prompts.length));
    const hasNegative = Boolean(body.negative_prompt);
    for (const node of box.querySelectorAll(".english-negative")) node.hidden = !hasNegative;
    negative.value = hasNegative ? answer.english_negative_prompt : "";
    const used = [...new Set(answer.translations.filter(Boolean).map((t) => t.translator))];
    note.textContent = `Translated with ${used.join(", ")}. Check the English (one line per prompt), edit it `
      + "if you like, then press Generate to draw it. Translate: off draws the prompts as typed.";
    box.hidden = false;
    shown = keyOf(body, chosen);
    english.focus();
  }

  choice.addEventListener("change", () => { if (choice.value === "off") hide(); });

  /** The job body to send, or null when the English is now on show to be checked first. */
  async function prepare(body) {
    const chosen = choice.value;
    const texts = [...body.prompts, body.negative_prompt ?? ""];
    if (chosen === "off" || !texts.some(needsTranslation)) {
      hide();
      return body;
    }
    if (shown === keyOf(body, chosen)) {
      const checked = {...body, translate: chosen, english_prompts: lines(english.value)};
      if (body.negative_prompt) checked.english_negative_prompt = negative.value.trim();
      return checked;
    }
    const answer = await callApi("api/translate", {
      prompts: body.prompts, negative_prompt: body.negative_prompt ?? "", translate: chosen,
    });
    show(answer, body, chosen);
    return null;
  }

  return {prepare, hide};
}
