// Flicker view: alternate the two stacked images of #flicker every N ms so a difference is seen,
// not hunted (as Kaleidoscope and tev do). f or space starts/stops, arrow keys step one frame; a tap on the
// stage toggles too (static/viewer.js calls window.abFlicker.toggle).
(() => {
  let timer = null;
  let frame = 0;
  const frames = () => document.querySelectorAll("#flicker img.flicker-frame");
  const intervalMs = () => {
    const el = document.getElementById("flicker-ms");
    const ms = el ? parseInt(el.value, 10) : 300;
    return Math.min(5000, Math.max(30, Number.isFinite(ms) ? ms : 300));
  };
  const show = (i) => {
    const f = frames();
    if (f.length < 2) return;
    frame = ((i % 2) + 2) % 2;
    f.forEach((img, k) => { img.style.visibility = k === frame ? "visible" : "hidden"; });
    const label = document.getElementById("flicker-side");
    if (label) label.textContent = "showing: " + f[frame].dataset.side;
  };
  const setButton = () => {
    const b = document.getElementById("flicker-toggle");
    if (b) b.textContent = timer ? "Stop" : "Flicker";
  };
  const stop = () => { clearInterval(timer); timer = null; setButton(); };
  const start = () => {
    clearInterval(timer);
    if (frames().length < 2) return;
    timer = setInterval(() => show(frame + 1), intervalMs());
    setButton();
  };
  const toggle = () => (timer ? stop() : start());
  window.abFlicker = { toggle };
  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

  document.addEventListener("keydown", (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey || frames().length < 2) return;
    if (e.key === "f" || e.key === " ") { toggle(); e.preventDefault(); }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      stop();
      show(frame + (e.key === "ArrowRight" ? 1 : -1));
      e.preventDefault();
    }
  });
  document.addEventListener("click", (e) => {
    if (e.target.closest && e.target.closest("#flicker-toggle")) toggle();
  });
  document.addEventListener("change", (e) => {
    if (e.target.id === "flicker-ms" && timer) start();
  });
  // A new pair replaces the images: begin again on the left frame, keep flickering if it was.
  new MutationObserver(() => {
    const f = frames();
    if (f.length >= 2 && f[0].dataset.seen !== "1") {
      f[0].dataset.seen = "1";
      show(0);
      if (timer) start(); else setButton();
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
