// X/Y/Z grid (comparisons/workflows/xyz.py): a click on a cell (not the end of a drag) picks it, a second click
// unpicks it; with two picked, the grid's .grid-pair shows them side by side and as a flicker stage, zoomed with
// the grid (static/viewer.js) and flickered by static/flicker.js. The reference is a cell like any other.
(() => {
  let down = null;
  document.addEventListener("pointerdown", (e) => { down = { x: e.clientX, y: e.clientY }; }, true);
  const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const frame = (img, label, extra, hidden) =>
    `<img class="zoom-img pixelated${extra}" src="${img.src}" data-side="${esc(label)}" data-label="${esc(label)}"` +
    ` alt="${esc(label)}" draggable="false"${hidden ? ' style="visibility:hidden"' : ""}>`;
  const render = (grid) => {
    const out = grid.querySelector(".grid-pair");
    const picked = [...grid.querySelectorAll(".grid-cell.picked")];
    if (!out) return;
    if (picked.length < 2) {
      out.innerHTML = `<p class="grid-hint">${picked.length ? "One cell picked: click another." : "Click two cells to compare them here."}</p>`;
      return;
    }
    const [a, b] = picked.map((c) => ({ img: c.querySelector("img"), label: JSON.parse(c.dataset.cell).label }));
    const labels = [a.label, b.label];
    const cells = [a, b].map((p, k) => `<figure class="pair-cell"><div class="zoom-box">${frame(p.img, labels[k], "", false)}` +
      `</div><figcaption>${k ? "second" : "first"}: ${esc(labels[k])}</figcaption></figure>`).join("");
    out.innerHTML = `<div class="pair-row">${cells}</div><div class="flicker-root">` +
      `<div class="zoom-box flicker-stage">${frame(a.img, labels[0], " flicker-frame", false)}${frame(b.img, labels[1], " flicker-frame", true)}</div>` +
      `<div class="flicker-controls"><button type="button" class="flicker-toggle">Flicker</button>` +
      `<label>every <input type="number" class="flicker-ms" min="30" max="5000" step="10" value="300"> ms</label>` +
      `<span class="flicker-side">showing: ${esc(labels[0])}</span></div></div>`;
  };
  document.addEventListener("click", (e) => {
    const cell = e.target.closest && e.target.closest(".grid-cell");
    if (!cell) return;
    if (down && Math.abs(e.clientX - down.x) + Math.abs(e.clientY - down.y) > 4) return;  // a pan, not a pick
    const grid = cell.closest(".xyz");
    if (cell.classList.contains("picked")) cell.classList.remove("picked");
    else {
      const picked = [...grid.querySelectorAll(".grid-cell.picked")];
      if (picked.length >= 2) picked[0].classList.remove("picked");  // the oldest pick gives way
      cell.classList.add("picked");
    }
    render(grid);
  });
})();
