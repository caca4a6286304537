// The option forms of the pipeline's steps, generated from /kinds: one input per parameter (numbers
// with their limits, a select for choices, a checkbox for yes/no), pre-filled with the defaults.
// Only the values the user changed are kept (for this browser) and sent with the pipeline job.
import { h } from './dom';
import type { Kind, KindParam, ParamValue, Scalar, StepOptions } from './types';

/** The steps of the one-click pipeline whose options the panel offers. */
export const OPTION_STEPS = ['project', 'cluster', 'predict'];
const KEY = 'nipgboard.stepOptions';

/** Parameters the pipeline fills in itself (the network clicked). */
const formParams = (k: Kind) => k.params.filter((p) => p.type !== 'network' && p.type !== 'networks' && p.type !== 'object');

const same = (a: ParamValue | null, b: ParamValue | null) => JSON.stringify(a) === JSON.stringify(b);

/** The value typed into an input, or null when empty or not a valid value of the parameter. */
function parse(p: KindParam, text: string): ParamValue | null {
  const t = text.trim();
  if (!t) return null;
  const one = (s: string, type: string): Scalar | null => {
    if (type === 'int') return /^[+-]?\d+$/.test(s) ? Number(s) : null;
    if (type === 'float') return s !== '' && isFinite(Number(s)) ? Number(s) : null;
    if (type === 'choice') return p.choices?.includes(s) ? s : null;
    return s;
  };
  if (p.type.endsWith('_list')) {
    const items = t.split(',').map((s) => one(s.trim(), p.type.slice(0, -5)));
    return items.every((x) => x !== null) ? items as Scalar[] : null;
  }
  return one(t, p.type);
}

const show = (v: ParamValue | null) => v === null ? '' : Array.isArray(v) ? v.join(', ') : String(v);
const label = (name: string) => name.replace(/_/g, ' ');

export class StepOptionForms {
  kinds = new Map<string, Kind>();
  /** Changed values per step. */
  values: StepOptions = {};

  constructor() {
    try {
      const saved: unknown = JSON.parse(localStorage.getItem(KEY) || '{}');
      if (saved && typeof saved === 'object') this.values = saved as StepOptions;
    } catch { /* start afresh */ }
  }

  /** Take the steps' parameters; stored values no longer valid for them are dropped. */
  setKinds(kinds: Map<string, Kind>) {
    this.kinds = kinds;
    for (const step of Object.keys(this.values)) {
      const k = kinds.get(step), vals = this.values[step];
      for (const name of Object.keys(vals)) {
        const p = k && formParams(k).find((x) => x.name === name);
        if (!p || same(p.default, vals[name]) || parse(p, show(vals[name])) === null) delete vals[name];
      }
      if (!Object.keys(vals).length) delete this.values[step];
    }
    this.save();
  }

  private save() { localStorage.setItem(KEY, JSON.stringify(this.values)); }

  /** The user's value of a parameter, else its default. */
  value(step: string, p: KindParam): ParamValue | null { return this.values[step]?.[p.name] ?? p.default; }

  set(step: string, p: KindParam, v: ParamValue | null) {
    const vals = this.values[step] ?? {};
    if (v === null || same(v, p.default)) delete vals[p.name];
    else vals[p.name] = v;
    if (Object.keys(vals).length) this.values[step] = vals; else delete this.values[step];
    this.save();
  }

  /** The options that differ from the defaults, per step (of `steps` only, if given); undefined when none do. */
  changed(steps: string[] = OPTION_STEPS): StepOptions | undefined {
    const out: StepOptions = {};
    for (const step of OPTION_STEPS) {
      if (steps.includes(step) && this.values[step] && this.kinds.has(step)) out[step] = { ...this.values[step] };
    }
    return Object.keys(out).length ? out : undefined;
  }

  /** One step's changed options (e.g. for a job of that step alone). */
  changedFor(step: string): Record<string, ParamValue> { return { ...(this.values[step] ?? {}) }; }

  /** The collapsible forms of every pipeline step the server knows. */
  forms(onChange: () => void): HTMLElement[] {
    return OPTION_STEPS.filter((s) => this.kinds.has(s)).map((s) => this.form(this.kinds.get(s)!, onChange));
  }

  form(kind: Kind, onChange: () => void): HTMLElement {
    const step = kind.kind;
    const n = Object.keys(this.values[step] ?? {}).length;
    const summary = h('summary', { text: `Options: ${step}${n ? ` (${n} changed)` : ''}`, title: kind.description });
    const details = h('details', { class: 'opts-form', 'data-step': step, id: `nb-options-${step}` }, summary);
    details.open = sessionStorage.getItem('nipgboard.optionsOpen:' + step) === '1';
    details.addEventListener('toggle', () => sessionStorage.setItem('nipgboard.optionsOpen:' + step, details.open ? '1' : '0'));
    const grid = h('div', { class: 'opts' });
    for (const p of formParams(kind)) {
      const input = this.input(step, p, () => {
        const k = Object.keys(this.values[step] ?? {}).length;
        summary.textContent = `Options: ${step}${k ? ` (${k} changed)` : ''}`;
        onChange();
      });
      grid.append(h('label', { text: label(p.name), title: p.help, for: input.id }), input);
    }
    details.append(grid, h('button', { text: 'Defaults', title: `Every ${step} option back to its default`, onClick: () => {
      delete this.values[step];
      this.save();
      details.replaceWith(this.form(kind, onChange));
      onChange();
    } }));
    return details;
  }

  private input(step: string, p: KindParam, changed: () => void): HTMLElement {
    const v = this.value(step, p);
    const common = { name: p.name, id: `nb-opt-${step}-${p.name}`, title: p.help, 'data-default': show(p.default) };
    const mark = (el: HTMLElement) => el.classList.toggle('changed', this.values[step]?.[p.name] !== undefined);
    let el: HTMLInputElement | HTMLSelectElement;
    if (p.type === 'choice' || (p.type === 'bool' && p.default === null)) {
      // A select; with no default the first entry leaves the choice to the step.
      const choices = p.type === 'bool' ? ['true', 'false'] : (p.choices ?? []).map(String);
      const sel = h('select', common) as HTMLSelectElement;
      if (p.default === null) sel.append(h('option', { value: '', text: '(default)' }));
      for (const c of choices) sel.append(h('option', { value: c, text: p.type === 'bool' ? (c === 'true' ? 'yes' : 'no') : c, selected: show(v) === c }));
      sel.addEventListener('change', () => {
        this.set(step, p, sel.value === '' ? null : p.type === 'bool' ? sel.value === 'true' : sel.value);
        mark(sel); changed();
      });
      el = sel;
    } else if (p.type === 'bool') {
      const box = h('input', { ...common, type: 'checkbox', checked: v === true }) as HTMLInputElement;
      box.addEventListener('change', () => { this.set(step, p, box.checked); mark(box); changed(); });
      el = box;
    } else {
      const numeric = p.type === 'int' || p.type === 'float';
      const box = h('input', {
        ...common, type: numeric ? 'number' : 'text', value: show(v), placeholder: p.default === null ? 'default' : undefined,
        min: numeric ? p.min ?? undefined : undefined, max: numeric ? p.max ?? undefined : undefined,
        step: p.type === 'int' ? 1 : p.type === 'float' ? 'any' : undefined,
      }) as HTMLInputElement;
      box.addEventListener('change', () => {
        const parsed = parse(p, box.value);
        if (parsed === null && box.value.trim()) { box.classList.add('err'); return; }
        box.classList.remove('err');
        this.set(step, p, parsed);
        if (parsed === null) box.value = show(p.default);
        mark(box); changed();
      });
      el = box;
    }
    mark(el);
    return el;
  }
}
