// Category colours of the view and its legend.

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22',
  '#7f7f7f', '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#9edae5', '#dbdb8d', '#393b79'];
const FIXED: Record<string, string> = {
  '(no label)': '#5f6368', train: '#1e88e5', test: '#fdd835', pool: '#8d8d8d',
  'networks disagree': '#e53935', 'unsure': '#fb8c00', 'agree': '#43a047', 'expert label': '#1e88e5',
};

export function hexRGB(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** The colour of a category: fixed for the known ones, else by its rank (palette, then golden-angle hues). */
export function catColour(key: string, rank: number) {
  if (FIXED[key]) return FIXED[key];
  if (rank < PALETTE.length) return PALETTE[rank];
  const hue = (rank * 137.508) % 360;
  const c = (1 - Math.abs(2 * 0.55 - 1)) * 0.65, x = c * (1 - Math.abs(((hue / 60) % 2) - 1)), m = 0.55 - c / 2;
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x] : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  return '#' + [r, g, b].map((v) => Math.round((v + m) * 255).toString(16).padStart(2, '0')).join('');
}
