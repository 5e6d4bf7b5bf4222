// Following a job: its Server-Sent Events (or polling its status), and upscale jobs.

import {callApi} from "./client.js";
import {apiUrl, TERMINAL, smooth} from "./dom.js";
import {setBusy} from "./form.js";
import {loadRuns} from "./runs_list.js";

export function follow(job, view) {
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
export async function poll(id, view) {
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
export async function startUpscale(view, tile) {
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
