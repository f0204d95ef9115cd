// Small progressive enhancements; every page works without them.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const text = (source instanceof HTMLInputElement ? source.value : source.textContent).trim();
  const done = () => { button.textContent = "Copied"; setTimeout(() => (button.textContent = "Copy"), 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => selectText(button.dataset.copy));
  } else {
    selectText(button.dataset.copy);
  }
});

function selectText(id) {
  const element = document.getElementById(id);
  if (element instanceof HTMLInputElement) { element.select(); document.execCommand && document.execCommand("copy"); return; }
  const range = document.createRange();
  range.selectNodeContents(document.getElementById(id));
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  document.execCommand && document.execCommand("copy");
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.confirm");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// Ticket list: new and updated tickets appear without reloading the page.
(function liveTicketList() {
  const tbody = document.getElementById("ticket-rows");
  if (!tbody) return;
  const source = new URL(tbody.dataset.live, window.location.origin);
  source.searchParams.set("partial", "1");
  let last = tbody.innerHTML;
  async function refresh() {
    try {
      const response = await fetch(source, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (response.ok) {
        const html = await response.text();
        if (html !== last) { tbody.innerHTML = html; last = html; }
      }
    } catch (e) { /* offline for a moment: try again next tick */ }
  }
  setInterval(refresh, 1000);
})();

// Ticket view: say how many remote images were blocked, and load them on request.
document.querySelectorAll("iframe.mail-html").forEach(async (frame) => {
  // The frame runs no script (sandbox without allow-scripts); we size it to its content from here.
  const fit = () => {
    try {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 8) + "px";
    } catch (e) { /* keep the default height */ }
  };
  frame.addEventListener("load", () => { fit(); setTimeout(fit, 300); });
  const note = frame.nextElementSibling;
  try {
    const response = await fetch(frame.dataset.blockedSrc, { credentials: "same-origin" });
    const { blocked } = await response.json();
    if (blocked > 0) {
      note.querySelector("span").textContent = `${blocked} remote image${blocked > 1 ? "s" : ""} blocked.`;
      note.hidden = false;
      note.querySelector("button").addEventListener("click", () => { frame.src = frame.dataset.imagesSrc; note.hidden = true; });
    }
  } catch (e) { /* the body still shows without the note */ }
});
