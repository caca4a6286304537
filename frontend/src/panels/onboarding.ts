// An empty logdir: the form that adds an image folder as a new run (an `ingest` job).
import { startJob } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import { describeJob, follow } from '../jobs';
import type { JobParams } from '../types';

export function onboarding(app: App, text: string | undefined) {
  app.notices.status('');
  app.left.replaceChildren(h('h2', { text: 'NIPGBoard' }), h('p', { class: 'muted', text: 'No dataset yet.' }));
  const folder = h('input', { placeholder: '/absolute/path/to/images', id: 'nb-folder' }) as HTMLInputElement;
  const csv = h('input', { placeholder: '/path/to/labels.csv (optional)' }) as HTMLInputElement;
  const name = h('input', { value: 'images' }) as HTMLInputElement;
  const sub = h('input', { type: 'checkbox' }) as HTMLInputElement;
  const out = h('div', { class: 'prog' });
  const go = h('button', {
    class: 'primary', text: 'Add folder', onClick: async () => {
      const params: JobParams = { images: folder.value.trim() };
      if (csv.value.trim()) params.labels_csv = csv.value.trim();
      if (sub.checked) params.folder_labels = true;
      const run = name.value.trim() || 'images';
      try {
        const job = await follow(run, await startJob(run, 'ingest', params), (j) => { out.textContent = describeJob(j); });
        if (job.state === 'done') location.reload();
        else { out.textContent = `ingest ${job.state}: ${job.error || job.message || ''}`; out.className = 'err'; }
      } catch (e) { out.textContent = errorText(e); out.className = 'err'; }
    },
  });
  app.notices.message(h('div', {},
    h('h3', { text: 'Add an image folder' }),
    h('p', { text: text || 'This logdir holds no NIPGBoard dataset.' }),
    h('div', { text: 'Image folder (searched recursively):' }), folder,
    h('div', { text: 'Labels you already have, as a CSV of path,label rows:' }), csv,
    h('label', {}, sub, ' or: each image\'s first subfolder is its label'), h('br'),
    h('div', { text: 'Name of the new run:' }), name, go, out,
    h('p', { class: 'hint', text: 'Or in a shell: nipgboard init LOGDIR/RUN --images FOLDER [--labels CSV], then reload.' })));
}
