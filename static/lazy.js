// Images that load only when they come near the screen (their authenticated URL fetched then),
// so long lists of thumbnails cost what is on screen, not what is in the list.
import { imageUrl } from "./api.js";

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    observer.unobserve(entry.target);
    const img = entry.target;
    imageUrl(img.dataset.src).then((url) => { img.src = url; }).catch(() => { img.classList.add("failed"); });
  }
}, { rootMargin: "300px" });

// Give `img` the API path it shows once visible.
export function lazyImage(img, path) {
  img.dataset.src = path;
  observer.observe(img);
  return img;
}

// Stop waiting for `img` (it got its picture another way).
export function forgetLazy(img) {
  observer.unobserve(img);
}

// Call `load()` whenever `sentinel` (the end of a list) comes within reach of the screen;
// `load` resolves when its items are in the list. Returns `rearm()`, to call after each load:
// observing again reports whether the end is still in view, so pages follow until it is not.
export function whenNear(sentinel, load) {
  const watch = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) load();
  }, { rootMargin: "600px" });
  return (active = true) => {
    watch.unobserve(sentinel);
    if (active) watch.observe(sentinel);
  };
}
