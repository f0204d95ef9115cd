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

// Ticket list: new and updated tickets appear without reloading the page. The server sends plain
// values (JSON) and every one of them goes into the page as text: subjects, names and addresses come
// from strangers' mail, so nothing here ever parses them as HTML (no innerHTML).
(function liveTicketList() {
  const tbody = document.getElementById("ticket-rows");
  if (!tbody) return;
  const source = new URL(tbody.dataset.live, window.location.origin);
  source.searchParams.set("partial", "1");
  let last = null;

  // Each cell has its column's class and name (data-label): on a phone the rows become cards (style.css).
  function cell(row, name, label, ...children) {
    const td = document.createElement("td");
    td.className = name;
    if (label) td.dataset.label = label;
    td.append(...children);  // strings become text nodes
    row.append(td);
    return td;
  }

  function ticketRow(t) {
    const row = document.createElement("tr");
    row.dataset.ticketId = String(t.id);
    row.dataset.updated = t.updated_at;
    cell(row, "num", "#", String(t.number));
    const link = document.createElement("a");
    link.href = new URL(t.url, window.location.origin).pathname;  // always a path on this site
    link.textContent = t.subject;
    cell(row, "subject", null, link);
    if (t.customer_name) {
      const address = document.createElement("small");
      address.className = "muted";
      address.textContent = t.customer_address;
      cell(row, "customer", "Customer", t.customer_name, document.createElement("br"), address);
    } else {
      cell(row, "customer", "Customer", t.customer_address);
    }
    cell(row, "mailbox", "Mailbox", t.account);
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = t.status;
    cell(row, "status", "Status", badge);
    cell(row, "count", "Articles", String(t.article_count));
    cell(row, "updated", "Updated", t.updated);
    return row;
  }

  function emptyRow(text) {
    const row = document.createElement("tr");
    row.className = "empty";
    cell(row, "", null, text).colSpan = 7;
    return row;
  }

  async function refresh() {
    try {
      const response = await fetch(source, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      const text = await response.text();
      if (text === last) return;
      const page = JSON.parse(text);
      tbody.replaceChildren(...(page.items.length ? page.items.map(ticketRow) : [emptyRow(page.empty)]));
      last = text;
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
  frame.addEventListener("load", () => {
    fit();
    setTimeout(fit, 300);
    try {
      if (window.ResizeObserver && frame.contentDocument) new ResizeObserver(fit).observe(frame.contentDocument.documentElement);
    } catch (e) { /* sized once is enough */ }
  });
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
