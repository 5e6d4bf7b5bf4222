// Talking to the server: its JSON API, and its errors as ApiError {message, field, status}.



import {apiUrl} from "./dom.js";

export class ApiError extends Error {
  constructor(message, field = null, status = 0) {
    super(message);
    this.field = field;
    this.status = status;
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
    throw new ApiError(message, data?.field ?? null, response.status);
  }
  return data;
}
