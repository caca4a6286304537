// The centre view: every image is one point of a THREE.Points cloud. In thumbnail mode each point is
// a square sprite that samples its own cell of a sprite atlas (one draw call per atlas) and carries a
// coloured frame (the colour overlay); in dot mode it is a coloured disc. The view renders on demand
// only (camera moved, data or colours changed), so an idle tab costs nothing.
import * as THREE from 'three';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
import { medianNearest, normalise, placedMask, pointInPolygon } from './geometry';
import { FRAG, VERT } from './shaders';

export interface Atlas {
  /** The atlas image (already decoded). */
  image: TexImageSource;
  width: number;
  height: number;
  /** Cell edge in pixels. */
  cell: number;
  /** Cells per row. */
  perRow: number;
  /** Index of the first point held by this atlas; it holds `count` consecutive points. */
  start: number;
  count: number;
}

export type Tool = 'orbit' | 'box' | 'lasso';

export class PointView {
  readonly canvas: HTMLCanvasElement;
  private overlay: HTMLCanvasElement;
  private renderer: THREE.WebGLRenderer;
  private scene = new THREE.Scene();
  camera: THREE.PerspectiveCamera;
  controls: OrbitControls;
  private objects: THREE.Points[] = [];
  private materials: THREE.ShaderMaterial[] = [];
  private textures: THREE.Texture[] = [];
  private geometries: THREE.BufferGeometry[] = [];
  n = 0;
  dims = 3;
  positions = new Float32Array(0);
  colors = new Uint8Array(0);
  flags = new Uint8Array(0);
  /** 1 for a point with a place, 0 for one not placed yet (not drawn, not pickable, not selectable). */
  placed = new Uint8Array(0);
  /** How many points have a place. */
  placedCount = 0;
  private colorAttrs: THREE.BufferAttribute[] = [];
  private flagAttrs: THREE.BufferAttribute[] = [];
  private pending = false;
  private screen = new Float32Array(0);
  private screenDepth = new Float32Array(0);
  private screenValid = false;
  thumbs = true;
  sizeFactor = 1;
  private baseSize = 0.3;
  tool: Tool = 'orbit';
  frames = 0;
  lastFrameMs = 0;
  onHover: (index: number, x: number, y: number) => void = () => {};
  onClick: (index: number, ev: MouseEvent) => void = () => {};
  onSelect: (indices: number[], additive: boolean) => void = () => {};
  onFrame: () => void = () => {};

  constructor(private container: HTMLElement) {
    this.renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true, powerPreference: 'high-performance' });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(0x16181d, 1);
    this.canvas = this.renderer.domElement;
    this.canvas.className = 'nb-gl';
    container.appendChild(this.canvas);
    this.overlay = document.createElement('canvas');
    this.overlay.className = 'nb-overlay';
    container.appendChild(this.overlay);
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.05, 500);
    this.camera.position.set(0, 0, 28);
    this.controls = new OrbitControls(this.camera, this.canvas);
    this.controls.enableDamping = false;
    this.controls.zoomSpeed = 1.2;
    this.controls.addEventListener('change', () => { this.screenValid = false; this.requestRender(); });
    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
    this.installPointer();
  }

  resize() {
    const w = Math.max(1, this.container.clientWidth);
    const h = Math.max(1, this.container.clientHeight);
    this.renderer.setSize(w, h, false);
    this.canvas.style.width = w + 'px';
    this.canvas.style.height = h + 'px';
    this.overlay.width = w;
    this.overlay.height = h;
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    for (const m of this.materials) m.uniforms.uScale.value = this.scaleUniform();
    this.screenValid = false;
    this.requestRender();
  }

  private scaleUniform() {
    const h = this.renderer.getDrawingBufferSize(new THREE.Vector2()).y;
    return h / (2 * Math.tan((this.camera.fov * Math.PI) / 360));
  }

  /** Replace all points. `positions` holds n*3 (z = 0 for 2-D); a point with a non-finite coordinate
   * has no place yet and is left out. Atlases may be empty (dots only). */
  setPoints(positions: Float32Array, dims: number, atlases: Atlas[]) {
    this.clear();
    const n = positions.length / 3;
    this.n = n;
    this.dims = dims;
    this.placed = placedMask(positions, dims);
    this.placedCount = this.placed.reduce((a, b) => a + b, 0);
    this.positions = normalise(positions, dims);
    this.colors = new Uint8Array(n * 3).fill(160);
    this.flags = new Uint8Array(n);
    this.screen = new Float32Array(n * 2);
    this.screenDepth = new Float32Array(n);
    this.screenValid = false;
    const shown = Math.max(this.placedCount, 1);
    const spacing = dims === 3 ? 20 / Math.cbrt(shown) : 20 / Math.sqrt(shown);
    // Sprites about as large as the typical gap to the nearest neighbour, so dense clusters stay legible.
    const nn = medianNearest(this.positions, n, 500, this.placed);
    const uniform = spacing * (dims === 3 ? 0.55 : 0.8);
    this.baseSize = Math.min(1.6, nn > 0 ? Math.max(uniform * 0.12, Math.min(uniform, nn * 1.1)) : uniform);
    const groups: { start: number; count: number; atlas: Atlas | null }[] = atlases.length && this.thumbs
      ? atlases.map((a) => ({ start: a.start, count: Math.min(a.count, n - a.start), atlas: a }))
      : [{ start: 0, count: n, atlas: null }];
    // Points that no atlas covers are drawn as dots.
    let covered = 0;
    for (const g of groups) covered = Math.max(covered, g.start + g.count);
    if (groups[0].atlas && covered < n) groups.push({ start: covered, count: n - covered, atlas: null });
    for (const g of groups) {
      if (g.count <= 0) continue;
      const geo = new THREE.BufferGeometry();
      geo.setAttribute('position', new THREE.BufferAttribute(this.positions.subarray(g.start * 3, (g.start + g.count) * 3), 3));
      const cells = new Float32Array(g.count);
      for (let i = 0; i < g.count; i++) cells[i] = i;
      geo.setAttribute('aCell', new THREE.BufferAttribute(cells, 1));
      const ca = new THREE.BufferAttribute(this.colors.subarray(g.start * 3, (g.start + g.count) * 3), 3, true);
      ca.setUsage(THREE.DynamicDrawUsage);
      geo.setAttribute('aColor', ca);
      const fa = new THREE.BufferAttribute(this.flags.subarray(g.start, g.start + g.count), 1, false);
      fa.setUsage(THREE.DynamicDrawUsage);
      geo.setAttribute('aFlag', fa);
      geo.setAttribute('aPlaced', new THREE.BufferAttribute(this.placed.subarray(g.start, g.start + g.count), 1, false));
      geo.boundingSphere = new THREE.Sphere(new THREE.Vector3(), 1e6);
      let tex: THREE.Texture | null = null;
      if (g.atlas) {
        tex = new THREE.Texture(g.atlas.image as any);
        tex.flipY = false;
        tex.generateMipmaps = false;
        tex.minFilter = THREE.LinearFilter;
        tex.magFilter = THREE.LinearFilter;
        tex.colorSpace = THREE.NoColorSpace;
        tex.needsUpdate = true;
        this.textures.push(tex);
      }
      const mat = new THREE.ShaderMaterial({
        vertexShader: VERT,
        fragmentShader: FRAG,
        uniforms: {
          uAtlas: { value: tex },
          uThumbs: { value: tex ? 1 : 0 },
          uPerRow: { value: g.atlas ? g.atlas.perRow : 1 },
          uCellUV: { value: g.atlas ? new THREE.Vector2(g.atlas.cell / g.atlas.width, g.atlas.cell / g.atlas.height) : new THREE.Vector2(1, 1) },
          uSize: { value: this.baseSize * this.sizeFactor },
          uScale: { value: this.scaleUniform() },
          uMaxSize: { value: tex ? 160 : 24 },
        },
        depthTest: true,
        depthWrite: true,
        transparent: false,
      });
      const pts = new THREE.Points(geo, mat);
      pts.frustumCulled = false;
      this.scene.add(pts);
      this.objects.push(pts);
      this.materials.push(mat);
      this.geometries.push(geo);
      this.colorAttrs.push(ca);
      this.flagAttrs.push(fa);
    }
    this.set2D(dims === 2);
    this.resetCamera();
  }

  clear() {
    for (const o of this.objects) this.scene.remove(o);
    for (const g of this.geometries) g.dispose();
    for (const m of this.materials) m.dispose();
    for (const t of this.textures) t.dispose();
    this.objects = []; this.geometries = []; this.materials = []; this.textures = [];
    this.colorAttrs = []; this.flagAttrs = [];
    this.n = 0;
    this.requestRender();
  }

  set2D(flat: boolean) {
    this.controls.enableRotate = !flat;
    this.controls.screenSpacePanning = true;
    if (flat) {
      this.controls.mouseButtons = { LEFT: THREE.MOUSE.PAN, MIDDLE: THREE.MOUSE.DOLLY, RIGHT: THREE.MOUSE.PAN };
    } else {
      this.controls.mouseButtons = { LEFT: THREE.MOUSE.ROTATE, MIDDLE: THREE.MOUSE.DOLLY, RIGHT: THREE.MOUSE.PAN };
    }
  }

  resetCamera() {
    this.controls.target.set(0, 0, 0);
    this.camera.position.set(0, 0, this.dims === 3 ? 30 : 26);
    this.camera.up.set(0, 1, 0);
    this.controls.update();
    this.screenValid = false;
    this.requestRender();
  }

  setSizeFactor(f: number) {
    this.sizeFactor = f;
    for (const m of this.materials) m.uniforms.uSize.value = this.baseSize * f;
    this.requestRender();
  }

  /** Call after writing into `colors`. */
  colorsChanged() {
    for (const a of this.colorAttrs) a.needsUpdate = true;
    this.requestRender();
  }

  /** Call after writing into `flags` (0 normal, 1 selected, 2 dimmed, 3 current). */
  flagsChanged() {
    for (const a of this.flagAttrs) a.needsUpdate = true;
    this.requestRender();
  }

  requestRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.renderNow();
    });
  }

  renderNow() {
    const t0 = performance.now();
    this.renderer.render(this.scene, this.camera);
    this.lastFrameMs = performance.now() - t0;
    this.frames++;
    this.onFrame();
  }

  /** Rotate the camera around the target by `angle` radians (used by the benchmark and the demo). */
  orbit(angle: number) {
    const off = this.camera.position.clone().sub(this.controls.target);
    off.applyAxisAngle(new THREE.Vector3(0, 1, 0), angle);
    this.camera.position.copy(this.controls.target).add(off);
    this.camera.lookAt(this.controls.target);
    this.screenValid = false;
  }

  /** Move the camera to look at point i from close by. */
  focus(i: number) {
    if (i < 0 || i >= this.n || !this.placed[i]) return;
    const p = new THREE.Vector3(this.positions[i * 3], this.positions[i * 3 + 1], this.positions[i * 3 + 2]);
    const off = this.camera.position.clone().sub(this.controls.target).setLength(Math.max(this.baseSize * 25, 3));
    this.controls.target.copy(p);
    this.camera.position.copy(p).add(off);
    this.controls.update();
  }

  // -- picking ------------------------------------------------------------------------------------
  private projectAll() {
    if (this.screenValid) return;
    this.camera.updateMatrixWorld();
    const m = new THREE.Matrix4().multiplyMatrices(this.camera.projectionMatrix, this.camera.matrixWorldInverse).elements;
    const w = this.overlay.width, h = this.overlay.height;
    const P = this.positions, S = this.screen, D = this.screenDepth, placed = this.placed;
    for (let i = 0; i < this.n; i++) {
      const x = P[i * 3], y = P[i * 3 + 1], z = P[i * 3 + 2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (cw <= 1e-6 || !placed[i]) { S[i * 2] = -1e9; S[i * 2 + 1] = -1e9; D[i] = 1e9; continue; }
      const cx = (m[0] * x + m[4] * y + m[8] * z + m[12]) / cw;
      const cy = (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw;
      S[i * 2] = (cx * 0.5 + 0.5) * w;
      S[i * 2 + 1] = (0.5 - cy * 0.5) * h;
      D[i] = cw;
    }
    this.screenValid = true;
  }

  /** Screen radius (CSS px) of point i's sprite. */
  private radius(i: number) {
    const scale = this.scaleUniform() / (this.renderer.getPixelRatio() || 1);
    const s = (this.baseSize * this.sizeFactor * scale) / Math.max(this.screenDepth[i], 1e-3);
    return Math.max(3, Math.min(s, this.thumbs ? 160 : 24) / 2);
  }

  pick(x: number, y: number): number {
    if (!this.n) return -1;
    this.projectAll();
    let best = -1, bestD = Infinity;
    const S = this.screen;
    for (let i = 0; i < this.n; i++) {
      if (this.flags[i] === 2 || !this.placed[i]) continue;
      const dx = S[i * 2] - x, dy = S[i * 2 + 1] - y;
      const r = this.radius(i);
      if (Math.abs(dx) > r || Math.abs(dy) > r) continue;
      const d = this.screenDepth[i];
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  selectPolygon(poly: [number, number][]): number[] {
    this.projectAll();
    const out: number[] = [];
    let minx = Infinity, miny = Infinity, maxx = -Infinity, maxy = -Infinity;
    for (const [x, y] of poly) { minx = Math.min(minx, x); maxx = Math.max(maxx, x); miny = Math.min(miny, y); maxy = Math.max(maxy, y); }
    const S = this.screen;
    for (let i = 0; i < this.n; i++) {
      const x = S[i * 2], y = S[i * 2 + 1];
      if (x < minx || x > maxx || y < miny || y > maxy) continue;
      if (this.flags[i] === 2 || !this.placed[i]) continue;
      if (poly.length === 2 || pointInPolygon(x, y, poly)) out.push(i);
    }
    return out;
  }

  screenPos(i: number): [number, number] {
    this.projectAll();
    return [this.screen[i * 2], this.screen[i * 2 + 1]];
  }

  private installPointer() {
    let down: { x: number; y: number; t: number } | null = null;
    let path: [number, number][] = [];
    let dragging = false;
    let hoverRaf = 0;
    let last = { x: 0, y: 0 };
    const rel = (e: MouseEvent) => {
      const r = this.canvas.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    };
    const selecting = (e: PointerEvent) => this.tool !== 'orbit' || e.shiftKey;
    this.canvas.addEventListener('pointerdown', (e) => {
      const p = rel(e);
      down = { ...p, t: performance.now() };
      if (e.button === 0 && selecting(e)) {
        dragging = true;
        path = [[p.x, p.y]];
        this.controls.enabled = false;
        this.canvas.setPointerCapture(e.pointerId);
      }
    }, { capture: true });
    this.canvas.addEventListener('pointermove', (e) => {
      const p = rel(e);
      last = p;
      if (dragging) {
        const lasso = this.tool === 'lasso';
        if (lasso) path.push([p.x, p.y]); else path = [path[0], [p.x, p.y]];
        this.drawPath(path, lasso);
        return;
      }
      if (e.buttons) return;
      if (!hoverRaf) hoverRaf = requestAnimationFrame(() => {
        hoverRaf = 0;
        this.onHover(this.pick(last.x, last.y), last.x, last.y);
      });
    });
    this.canvas.addEventListener('pointerleave', () => this.onHover(-1, 0, 0));
    this.canvas.addEventListener('pointerup', (e) => {
      const p = rel(e);
      if (dragging) {
        dragging = false;
        this.controls.enabled = true;
        const lasso = this.tool === 'lasso';
        let poly: [number, number][];
        if (lasso) poly = path;
        else {
          const [a, b] = [path[0], [p.x, p.y]];
          poly = [[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]];
        }
        this.drawPath([], false);
        const moved = Math.hypot(p.x - path[0][0], p.y - path[0][1]);
        if (moved > 4) {
          this.onSelect(this.selectPolygon(poly), e.ctrlKey || e.metaKey || e.altKey);
          down = null;
          return;
        }
      }
      if (down && Math.hypot(p.x - down.x, p.y - down.y) < 5 && e.button === 0) {
        this.onClick(this.pick(p.x, p.y), e);
      }
      down = null;
    });
  }

  private drawPath(path: [number, number][], closed: boolean) {
    const g = this.overlay.getContext('2d')!;
    g.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (path.length < 2) return;
    g.strokeStyle = '#ffd400';
    g.fillStyle = 'rgba(255,212,0,0.12)';
    g.lineWidth = 1.5;
    g.setLineDash([5, 4]);
    g.beginPath();
    if (!closed) {
      const [a, b] = path;
      g.rect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
    } else {
      g.moveTo(path[0][0], path[0][1]);
      for (const [x, y] of path.slice(1)) g.lineTo(x, y);
      g.closePath();
    }
    g.fill();
    g.stroke();
  }

  /** Fraction of sampled canvas pixels that differ from the background (for tests). */
  nonBackgroundShare(): number {
    const gl = this.renderer.getContext();
    this.renderNow();
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let diff = 0, total = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
      total++;
      if (Math.abs(px[i] - 0x16) + Math.abs(px[i + 1] - 0x18) + Math.abs(px[i + 2] - 0x1d) > 24) diff++;
    }
    return diff / Math.max(total, 1);
  }
}
