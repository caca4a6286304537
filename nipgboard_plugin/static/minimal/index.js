// Served as the panel's module when the real panel (nipgboard_plugin/static/index.js, bundled from
// frontend/src) is not built: it only says how to build it.
export const MESSAGE = "The NIPGBoard panel is not built in this installation. Build it with " +
  "`bash scripts/build-frontend.sh` (needs Node.js 18+ and npm), then reload.";

export function render() {
  const p = document.createElement("p");
  p.id = "nb-not-built";
  p.style.cssText = "font: 15px/1.5 Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #212121;";
  p.textContent = MESSAGE;
  document.body.replaceChildren(p);
}
