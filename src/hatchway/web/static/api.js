// Talking to the worker's JSON API: the token, errors, and output streamed live.
// The token lives in this tab's sessionStorage only and travels in the Authorization header, never in a URL.

const TOKEN_KEY = "hatchway.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized = () => {};

/** Call `handler(hadToken)` whenever the API answers 401: the page then asks for a token. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function headers(accept) {
  const result = { Accept: accept };
  const current = token();
  if (current) result.Authorization = `Bearer ${current}`;
  return result;
}

async function request(path, { method = "GET", signal, accept = "application/json" } = {}) {
  const response = await fetch(path, { method, signal, headers: headers(accept), cache: "no-store", credentials: "omit" });
  if (response.status === 401) unauthorized(Boolean(token()));
  return response;
}

async function failure(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not the API's JSON error shape (a proxy's page, say): the status says enough
  }
  return new ApiError(response.status, error?.code ?? "http_error", error?.message ?? `HTTP ${response.status}`, error?.details);
}

/** GET (or another method) a JSON endpoint. Rejects with ApiError unless the status is 2xx or in `accept`. */
export async function api(path, { method = "GET", signal, acceptStatus = [] } = {}) {
  const response = await request(path, { method, signal });
  if (!response.ok && !acceptStatus.includes(response.status)) throw await failure(response);
  return response.json();
}

/**
 * Read a text endpoint that streams (`/jobs/{id}/logs?follow=true`) and call `onText` with each piece as it
 * arrives. Resolves when the server ends the stream (the job ended); rejects with ApiError on a refusal.
 */
export async function follow(path, onText, { signal } = {}) {
  const response = await request(path, { signal, accept: "text/plain" });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (value) onText(value);
    }
  } finally {
    reader.releaseLock();
  }
}

/** A query string from an object; arrays repeat their key, empty values are left out. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== null && item !== undefined && item !== "") search.append(key, String(item));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
