// The point sprites' shaders: a square thumbnail from its atlas cell with a coloured frame, or a
// coloured disc; the flag attribute marks selected (1), dimmed (2) and hovered/current (3) points. A point
// without a place yet (aPlaced 0: a running pipeline has not placed its image) lands outside the clip
// volume, so it is never drawn.

export const VERT = /* glsl */ `
attribute float aCell;
attribute vec3 aColor;
attribute float aFlag;
attribute float aPlaced;
uniform float uSize;
uniform float uScale;
uniform float uMaxSize;
varying vec3 vColor;
varying float vCell;
varying float vFlag;
varying float vPx;
void main() {
  if (aPlaced < 0.5) {
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    gl_PointSize = 1.0;
    vPx = 0.0; vColor = aColor; vCell = aCell; vFlag = aFlag;
    return;
  }
  vec4 mv = modelViewMatrix * vec4(position, 1.0);
  gl_Position = projectionMatrix * mv;
  float s = uSize * uScale / max(-mv.z, 1e-3);
  if (aFlag > 0.5 && aFlag < 1.5) s = s * 1.5 + 4.0;      // selected
  else if (aFlag > 2.5) s = s * 2.5 + 10.0;                // hovered / current
  else if (aFlag > 1.5) s = s * 0.5;                        // dimmed
  s = clamp(s, 2.0, uMaxSize);
  gl_PointSize = s;
  vPx = s;
  vColor = aColor;
  vCell = aCell;
  vFlag = aFlag;
  if (aFlag > 0.5 && aFlag < 1.5 || aFlag > 2.5) gl_Position.z -= 0.001 * gl_Position.w;  // on top
}
`;

export const FRAG = /* glsl */ `
uniform sampler2D uAtlas;
uniform float uThumbs;
uniform float uPerRow;
uniform vec2 uCellUV;
varying vec3 vColor;
varying float vCell;
varying float vFlag;
varying float vPx;
void main() {
  vec2 p = gl_PointCoord;
  vec3 frame = vColor;
  if (vFlag > 0.5 && vFlag < 1.5) frame = vec3(1.0, 1.0, 1.0);
  if (vFlag > 2.5) frame = vec3(1.0, 0.85, 0.0);
  if (vFlag > 1.5 && vFlag < 2.5) frame = mix(vColor, vec3(0.35), 0.75);
  if (uThumbs < 0.5 || vPx < 7.0) {
    float d = length(p - 0.5);
    if (d > 0.5) discard;
    gl_FragColor = vec4(frame, 1.0);
    return;
  }
  float b = max(0.1, 1.6 / vPx);
  if (vFlag > 0.5 && vFlag < 1.5 || vFlag > 2.5) b = max(b, 3.0 / vPx);
  if (p.x < b || p.x > 1.0 - b || p.y < b || p.y > 1.0 - b) {
    gl_FragColor = vec4(frame, 1.0);
    return;
  }
  vec2 q = (p - b) / (1.0 - 2.0 * b);
  float col = mod(vCell, uPerRow);
  float row = floor(vCell / uPerRow + 1e-4);
  vec2 uv = (vec2(col, row) + q) * uCellUV;
  vec3 c = texture2D(uAtlas, uv).rgb;
  if (vFlag > 1.5 && vFlag < 2.5) c = mix(c, vec3(0.3), 0.7);
  gl_FragColor = vec4(c, 1.0);
}
`;
