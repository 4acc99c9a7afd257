/** Two tiny SVG chart writers (no dependency, no browser): a line chart and grouped bars. */

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#637939', '#843c39', '#7b4173'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(2)}`;
}

export interface Series {
  name: string;
  values: number[];
  dashed?: boolean;
}

/** y against x on a log10 x axis (x > 0). */
export function lineChart(o: { title: string; xLabel: string; yLabel: string; xs: number[]; series: Series[]; width?: number; height?: number }): string {
  const W = o.width ?? 760;
  const H = o.height ?? 440;
  const L = 70;
  const R = 230;
  const T = 40;
  const B = 55;
  const pw = W - L - R;
  const ph = H - T - B;
  const lx = o.xs.map((x) => Math.log10(Math.max(x, 1e-9)));
  const x0 = Math.min(...lx);
  const x1 = Math.max(...lx, x0 + 1);
  const ymax = niceMax(Math.max(...o.series.flatMap((s) => s.values.filter((v) => Number.isFinite(v))), 0));
  const X = (x: number): number => L + ((Math.log10(Math.max(x, 1e-9)) - x0) / (x1 - x0)) * pw;
  const Y = (y: number): number => T + ph - (y / ymax) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const y = (ymax * i) / 5;
    parts.push(`<line x1="${L}" x2="${L + pw}" y1="${Y(y)}" y2="${Y(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${L - 6}" y="${Y(y) + 4}" text-anchor="end">${fmt(y)}</text>`);
  }
  for (const x of o.xs) {
    parts.push(`<line x1="${X(x)}" x2="${X(x)}" y1="${T}" y2="${T + ph}" stroke="#eee"/>`);
    parts.push(`<text x="${X(x)}" y="${T + ph + 16}" text-anchor="middle">${fmt(x)}</text>`);
  }
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="black"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="black"/>`);
  parts.push(`<text x="${L + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push(`<text x="16" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${T + ph / 2})">${esc(o.yLabel)}</text>`);
  o.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const pts = s.values.map((v, k) => (Number.isFinite(v) ? `${X(o.xs[k] ?? 1).toFixed(1)},${Y(v).toFixed(1)}` : null)).filter((p): p is string => p !== null);
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts.join(' ')}"/>`);
    for (const p of pts) {
      const [px, py] = p.split(',');
      parts.push(`<circle cx="${px}" cy="${py}" r="3" fill="${c}"/>`);
    }
    const ly = T + 6 + i * 18;
    parts.push(`<line x1="${L + pw + 14}" x2="${L + pw + 38}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<text x="${L + pw + 44}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** Grouped vertical bars: one group per category, one bar per series. */
export function barChart(o: { title: string; yLabel: string; categories: string[]; series: Series[]; width?: number; height?: number }): string {
  const W = o.width ?? 760;
  const H = o.height ?? 440;
  const L = 70;
  const R = 20;
  const T = 60;
  const B = 90;
  const pw = W - L - R;
  const ph = H - T - B;
  const ymax = niceMax(Math.max(...o.series.flatMap((s) => s.values.filter((v) => Number.isFinite(v))), 0));
  const Y = (y: number): number => T + ph - (Math.max(0, y) / ymax) * ph;
  const gw = pw / Math.max(o.categories.length, 1);
  const bw = (gw * 0.8) / Math.max(o.series.length, 1);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const y = (ymax * i) / 5;
    parts.push(`<line x1="${L}" x2="${L + pw}" y1="${Y(y)}" y2="${Y(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${L - 6}" y="${Y(y) + 4}" text-anchor="end">${fmt(y)}</text>`);
  }
  o.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    parts.push(`<rect x="${L + i * 165}" y="34" width="12" height="12" fill="${c}"/><text x="${L + i * 165 + 16}" y="44">${esc(s.name)}</text>`);
    s.values.forEach((v, k) => {
      if (!Number.isFinite(v)) return;
      const x = L + k * gw + gw * 0.1 + i * bw;
      parts.push(`<rect x="${x.toFixed(1)}" y="${Y(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(T + ph - Y(v)).toFixed(1)}" fill="${c}"/>`);
      parts.push(`<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(Y(v) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${fmt(v)}</text>`);
    });
  });
  o.categories.forEach((cat, k) => {
    const x = L + k * gw + gw / 2;
    const words = cat.split(' ');
    const lines: string[] = [];
    for (const w of words) {
      const last = lines[lines.length - 1];
      if (last !== undefined && (last + ' ' + w).length <= 16) lines[lines.length - 1] = `${last} ${w}`;
      else lines.push(w);
    }
    lines.forEach((ln, j) => parts.push(`<text x="${x.toFixed(1)}" y="${T + ph + 16 + j * 14}" text-anchor="middle">${esc(ln)}</text>`));
  });
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="black"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="black"/>`);
  parts.push(`<text x="16" y="${T + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${T + ph / 2})">${esc(o.yLabel)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
