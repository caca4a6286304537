// Standalone page (/data/plugin/nipgboard/index.html): the same module TensorBoard loads in its tab
// (the built panel, or the not-built message). The page's own copy of that message goes first.
import { render } from "../../index.js";

document.getElementById("nb-not-built")?.remove();
render();
