// The page's small DOM helpers: selectors, URLs under the page's prefix, icons, `el`.

export const $ = (selector, root = document) => root.querySelector(selector);
export const base = new URL(".", document.baseURI);
export const apiUrl = (path) => new URL(path, base).href;
export const TERMINAL = new Set(["done", "failed", "cancelled"]);
export const GRID_ROWS = 16;  // an image is 16 × 16 tokens: variations keep rows, extending adds rows
export const smooth = () => (matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth");

/** An extension's image `img` joined to the image it continues (`join`: {url, direction, rows}): the
 * source under it, the new part beside (or below) it; the run view's tiles and the runs list's thumbnail. */
export function joinedToSource(img, {url, direction, rows}) {
  const source = el("img", {class: "joined-source", src: assetUrl(url), alt: "", decoding: "async"});
  const node = el("span", {class: `joined ${direction === "down" ? "down" : "right"}`}, source, img);
  node.style.setProperty("--grown", String((GRID_ROWS + rows) / GRID_ROWS));
  return node;
}

/** An image URL from the API ("/api/images/…") under the page's own prefix. */
export function assetUrl(url) {
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
export const icon = (name) => `<svg viewBox="0 0 24 24" aria-hidden="true">${ICONS[name]}</svg>`;

/** document.createElement with attributes ("class", "text", "html" for our own icons, "on…" listeners). */
export function el(tag, attributes = {}, ...children) {
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

export const announce = (text) => { $("#announce").textContent = text; };  // for screen readers
