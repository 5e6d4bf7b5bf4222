// Talking to the server: its JSON API, and its errors as ApiError {message, field, status, errors}.

import {apiUrl} from "./dom.js";

export class ApiError extends Error {
  /** `errors`: every wrong field when there are several ([{message, field}], this one first). */
  constructor(message, field = null, status = 0, errors = []) {
    super(message);
    this.field = field;
    this.status = status;
    this.errors = errors;
  }
}

export async function callApi(path, body) {
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
    const errors = Array.isArray(data?.errors)
      ? data.errors.map((one) => ({message: String(one?.error ?? ""), field: one?.field ?? null})) : [];
    throw new ApiError(message, data?.field ?? null, response.status, errors);
  }
  return data;
}
