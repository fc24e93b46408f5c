// Flicker view: alternate the two stacked images of a .flicker-root (the Compare tab's #flicker, a grid's pair)
// every N ms so a difference is seen, not hunted (as Kaleidoscope and tev do). f or space starts/stops the visible
// one, arrow keys step one frame; a tap on the stage toggles too (static/viewer.js calls window.abFlicker.toggle).
(() => {
  const states = new WeakMap();  // root -> { timer, frame }
  const state = (root) => {
    if (!states.has(root)) states.set(root, { timer: null, frame: 0 });
    return states.get(root);
  };
  const frames = (root) => root.querySelectorAll("img.flicker-frame");
  const visible = () => [...document.querySelectorAll(".flicker-root")]
    .find((r) => r.offsetParent !== null && frames(r).length >= 2);
  const intervalMs = (root) => {
    const el = root.querySelector(".flicker-ms");
    const ms = el ? parseInt(el.value, 10) : 300;
    return Math.min(5000, Math.max(30, Number.isFinite(ms) ? ms : 300));
  };
  const show = (root, i) => {
    const f = frames(root);
    if (f.length < 2) return;
    const s = state(root);
    s.frame = ((i % 2) + 2) % 2;
    f.forEach((img, k) => { img.style.visibility = k === s.frame ? "visible" : "hidden"; });
    const label = root.querySelector(".flicker-side");
    if (label) label.textContent = "showing: " + f[s.frame].dataset.side;
  };
  const setButton = (root) => {
    const b = root.querySelector(".flicker-toggle");
    if (b) b.textContent = state(root).timer ? "Stop" : "Flicker";
  };
  const stop = (root) => { clearInterval(state(root).timer); state(root).timer = null; setButton(root); };
  const start = (root) => {
    const s = state(root);
    clearInterval(s.timer);
    if (frames(root).length < 2) return;
    s.timer = setInterval(() => (root.isConnected ? show(root, s.frame + 1) : stop(root)), intervalMs(root));
    setButton(root);
  };
  const toggle = (root) => {
    root = root || visible();
    if (root) (state(root).timer ? stop(root) : start(root));
  };
  window.abFlicker = { toggle };
  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

  document.addEventListener("keydown", (e) => {
    const root = visible();
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey || !root) return;
    if (e.key === "f" || e.key === " ") { toggle(root); e.preventDefault(); }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      stop(root);
      show(root, state(root).frame + (e.key === "ArrowRight" ? 1 : -1));
      e.preventDefault();
    }
  });
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest(".flicker-toggle");
    if (b && b.closest(".flicker-root")) toggle(b.closest(".flicker-root"));
  });
  document.addEventListener("change", (e) => {
    const root = e.target.classList.contains("flicker-ms") && e.target.closest(".flicker-root");
    if (root && state(root).timer) start(root);
  });
  // A new pair replaces the images: begin again on the first frame, keep flickering if it was.
  new MutationObserver(() => {
    for (const root of document.querySelectorAll(".flicker-root")) {
      const f = frames(root);
      if (f.length >= 2 && f[0].dataset.seen !== "1") {
        f[0].dataset.seen = "1";
        show(root, 0);
        if (state(root).timer) start(root); else setButton(root);
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
