// Building DOM elements from code: text is always set as text (never as
// HTML), so names and labels from the API cannot inject markup.

type Child = Node | string | null | undefined | false;

/** `<tag class=... ...attributes>children</tag>`. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    element.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return element;
}

/** `12:01:07`: the local time of an RFC 3339 timestamp. */
export function clock(timestamp: string): string {
  const at = new Date(timestamp);
  return Number.isNaN(at.getTime()) ? timestamp : at.toLocaleTimeString([], { hour12: false });
}
