// remsguard staff console: the one DOM builder of the console (console.js) and its session
// chart (session.js). Elements and text nodes only, never markup from strings.
"use strict";
window.remsguardEl = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) node.append(kid);
  return node;
};
