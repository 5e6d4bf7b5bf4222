// The page of `python -m nbkit serve`: a plain ES module (no framework, no build step) that uses only
// the server's JSON API. Every URL is relative to the page's folder, so behind a token (/t/<token>/)
// everything stays under that prefix.
// Its concerns live in modules: dom, client, field_errors, form, run_view, job_events, runs_list, lightbox.

import {loadInfo} from "./form.js";
import {loadRuns} from "./runs_list.js";

loadInfo();
loadRuns();
