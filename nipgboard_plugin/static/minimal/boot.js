// Standalone page (/data/plugin/nipgboard/index.html): the same module TensorBoard loads in its tab.
import { render } from "../../index.js";

render();
