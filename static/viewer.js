// Pair viewer: every .zoom-box (the two sides of #pair, the #flicker stage, an X/Y/Z grid's cells) shows its images at the same
// zoom and pan, in image pixels, so a region is compared at once in both views. Sizes are always whole CSS
// pixels per image pixel (nearest neighbour, pixel-exact). Wheel (or a two-finger pinch) zooms at the cursor, drag
// pans, 0 resets, a tap on the flicker stage toggles flicker. Hover reads out the pixel under the cursor in both images.
// Keys 1-4 vote, n asks for the next pair (the buttons' own click handlers do the work).
(() => {
  const DISPLAY_MAX = 256;   // CSS px of an image at zoom 1 (ui/views.py DISPLAY_MAX)
  const state = { zoom: 1, x: 0, y: 0 };  // zoom factor over the fitted size; top-left image pixel shown
  const canvases = new WeakMap();

  const boxes = () => [...document.querySelectorAll(".zoom-box")];
  // Each box is sized by its own image (the Inspect tab's pair may be larger than the Compare tab's).
  const natural = (box) => {
    const img = box && box.querySelector("img");
    return img && img.naturalWidth ? { w: img.naturalWidth, h: img.naturalHeight } : null;
  };
  // CSS px per image px that fits the box's width (at most DISPLAY_MAX): a whole number for a small image, and for
  // one wider than the box the power-of-two fraction that fits it whole (zoom then brings back 1:1 and more).
  const fit = (box, n) => {
    const avail = Math.min(DISPLAY_MAX, box.parentElement.clientWidth || DISPLAY_MAX);
    if (n.w > avail) return 1 / 2 ** Math.ceil(Math.log2(n.w / avail));
    return Math.max(1, Math.floor(avail / n.w));
  };
  const clamp = (n) => {
    const span = 1 / state.zoom;   // share of the image a box shows
    state.x = Math.min(Math.max(0, state.x), n.w * (1 - span));
    state.y = Math.min(Math.max(0, state.y), n.h * (1 - span));
  };
  const apply = () => {
    for (const box of boxes()) {
      const n = natural(box);
      if (!n) continue;
      const span = 1 / state.zoom;
      const x = Math.min(Math.max(0, state.x), n.w * (1 - span)), y = Math.min(Math.max(0, state.y), n.h * (1 - span));
      const k = fit(box, n);
      const px = k * state.zoom;  // CSS px per image pixel: whole squares from 1:1 up
      box.style.width = Math.round(n.w * k) + "px";
      box.style.height = Math.round(n.h * k) + "px";
      box.dataset.px = px;
      for (const img of box.querySelectorAll("img")) {
        img.style.width = n.w * px + "px";
        img.style.height = n.h * px + "px";
        img.style.left = -Math.round(x * px) + "px";
        img.style.top = -Math.round(y * px) + "px";
      }
    }
    document.querySelectorAll(".zoom-level").forEach((z) => { z.textContent = "zoom ×" + state.zoom; });
  };
  const reset = () => { state.zoom = 1; state.x = 0; state.y = 0; apply(); };
  window.abViewer = { state, apply, reset };

  // The image pixel under a pointer event inside a box.
  const pixelAt = (box, e) => {
    const r = box.getBoundingClientRect();
    const px = parseFloat(box.dataset.px || "1");
    return { x: Math.floor(state.x + (e.clientX - r.left) / px), y: Math.floor(state.y + (e.clientY - r.top) / px) };
  };
  const rgb = (img, p) => {
    let c = canvases.get(img);
    if (!c || c.src !== img.src) {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      c = { src: img.src, ctx };
      canvases.set(img, c);
    }
    const d = c.ctx.getImageData(p.x, p.y, 1, 1).data;
    return `(${d[0]}, ${d[1]}, ${d[2]})`;
  };
  // The pair a box belongs to: its .zoom-root (a tab's stage, an inspect page), whose readout names its pixels.
  const readout = (box, e) => {
    const root = box.closest(".zoom-root") || document;
    const out = root.querySelector(".pixel-readout");
    const imgs = [...root.querySelectorAll(".pair-row img.zoom-img")];
    const n = natural(box);
    if (!out || imgs.length < 2 || !n) return;
    const p = pixelAt(box, e);
    if (p.x < 0 || p.y < 0 || p.x >= n.w || p.y >= n.h) return;
    out.textContent = `x ${p.x}, y ${p.y} · ` + imgs.map((i) => `${i.dataset.label} ${rgb(i, p)}`).join(" · ");
  };

  // Zoom to `zoom` (1..64), keeping the image pixel under the point (clientX, clientY) of `box` where it is.
  const zoomAt = (box, point, zoom) => {
    const n = natural(box);
    zoom = Math.min(64, Math.max(1, zoom));
    if (!n || zoom === state.zoom) return;
    const before = pixelAt(box, point);
    const frac = { x: before.x - state.x, y: before.y - state.y };
    state.x = before.x - frac.x * state.zoom / zoom;
    state.y = before.y - frac.y * state.zoom / zoom;
    state.zoom = zoom;
    clamp(n);
    apply();
  };

  document.addEventListener("wheel", (e) => {
    const box = e.target.closest && e.target.closest(".zoom-box");
    if (!box || !natural(box)) return;
    e.preventDefault();
    zoomAt(box, e, e.deltaY < 0 ? state.zoom * 2 : state.zoom / 2);
  }, { passive: false });

  // Touch: two fingers on a box pinch-zoom it (and every box with it) in powers of two, about their midpoint.
  const fingers = new Map();  // pointerId -> {x, y} of the touches down on a zoom box
  let pinch = null;
  const spread = () => {
    const [a, b] = [...fingers.values()];
    return { d: Math.hypot(a.x - b.x, a.y - b.y) || 1, clientX: (a.x + b.x) / 2, clientY: (a.y + b.y) / 2 };
  };
  const lift = (e) => {
    fingers.delete(e.pointerId);
    if (fingers.size < 2) pinch = null;
  };
  document.addEventListener("pointerup", lift);
  document.addEventListener("pointercancel", lift);

  let drag = null;
  document.addEventListener("pointerdown", (e) => {
    const box = e.target.closest && e.target.closest(".zoom-box");
    if (!box || e.button !== 0) return;
    if (e.pointerType === "touch") {
      fingers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (fingers.size === 2) {
        pinch = { box, d0: spread().d, zoom0: state.zoom };
        drag = null;
        e.preventDefault();
        return;
      }
    }
    drag = { box, x0: e.clientX, y0: e.clientY, sx: state.x, sy: state.y, moved: false };
    e.preventDefault();
  });
  document.addEventListener("pointermove", (e) => {
    const box = e.target.closest && e.target.closest(".zoom-box");
    if (fingers.has(e.pointerId)) fingers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pinch && fingers.size === 2) {
      const s = spread();
      zoomAt(pinch.box, s, 2 ** Math.round(Math.log2(pinch.zoom0 * s.d / pinch.d0)));
      return;
    }
    if (drag) {
      const px = parseFloat(drag.box.dataset.px || "1");
      const dx = e.clientX - drag.x0, dy = e.clientY - drag.y0;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      state.x = drag.sx - dx / px;
      state.y = drag.sy - dy / px;
      const n = natural(drag.box);
      if (n) clamp(n);
      apply();
    }
    if (box) readout(box, e);
  });
  document.addEventListener("pointerup", () => {
    if (drag && !drag.moved && drag.box.classList.contains("flicker-stage") && window.abFlicker) {
      window.abFlicker.toggle(drag.box.closest(".flicker-root"));
    }
    drag = null;
  });

  // Keys belong to a field being typed in; a checkbox or button keeps the shortcuts working.
  const typing = (el) => el && (el.isContentEditable || ["TEXTAREA", "SELECT"].includes(el.tagName)
    || (el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "range"].includes(el.type)));
  const press = (id) => {
    const b = document.getElementById(id);
    if (b && !b.disabled) b.click();
  };
  const KEYS = { "1": "vote-left", "2": "vote-right", "3": "vote-tie", "4": "vote-both-bad", n: "next-pair" };
  document.addEventListener("keydown", (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "0") { reset(); e.preventDefault(); }
    else if (KEYS[e.key]) { press(KEYS[e.key]); e.preventDefault(); }
  });

  // A touch screen has no keyboard to hint at: hints hidden, tap hints shown (decided once, at load, so a
  // full-page screenshot that re-evaluates media queries shows the page as the phone does).
  const touch = matchMedia("(hover: none)").matches;
  const hints = () => {
    if (!touch) return;
    document.querySelectorAll(".key-hint").forEach((el) => { el.style.display = "none"; });
    document.querySelectorAll(".touch-hint").forEach((el) => { el.style.display = "inline"; });
  };

  // A refused action names the field at fault (#form-error's data-field): that field alone is marked.
  const markField = () => {
    const err = document.querySelector("#form-error .form-error");
    const want = err ? err.dataset.field || "" : "";
    document.querySelectorAll(".field-error").forEach((el) => { if (el.id !== want) el.classList.remove("field-error"); });
    const el = want && document.getElementById(want);
    if (el && !el.classList.contains("field-error")) el.classList.add("field-error");
    // A new message is brought into view (on a phone it sits below the buttons that caused it).
    if (err && !err.dataset.shown) { err.dataset.shown = "1"; err.scrollIntoView({ block: "nearest" }); }
  };

  // On a narrow screen a new pair is brought into view (Generate sits far above it there).
  const intoView = () => {
    const pair = document.getElementById("pair");
    if (!pair || window.innerWidth > 800) return;
    const top = pair.getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight * 0.5) pair.scrollIntoView({ block: "start" });
  };

  // New images (a new pair, or the same pair relabelled after the vote): size them once loaded.
  new MutationObserver(() => {
    hints();
    markField();
    let fresh = false;
    for (const img of document.querySelectorAll(".zoom-box img")) {
      if (img.dataset.sized !== "1") {
        img.dataset.sized = "1";
        fresh = fresh || img.closest("#pair") !== null;
        if (img.complete) apply(); else img.addEventListener("load", apply, { once: true });
      }
    }
    if (fresh) intoView();
  }).observe(document.documentElement, { childList: true, subtree: true });
  window.addEventListener("resize", apply);
})();
