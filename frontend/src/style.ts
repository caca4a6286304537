export const CSS = `
:root { color-scheme: light; }
html, body { margin: 0; height: 100%; font: 13px/1.35 Roboto, "Helvetica Neue", Arial, sans-serif; color: #212121; background: #f5f5f5; }
.nb-root { display: grid; grid-template-columns: 290px 1fr 330px; height: 100vh; overflow: hidden; }
.nb-left, .nb-right { overflow-y: auto; padding: 8px 10px; background: #fff; border-right: 1px solid #ddd; }
.nb-right { border-right: none; border-left: 1px solid #ddd; display: flex; flex-direction: column; }
.nb-centre { position: relative; overflow: hidden; background: #16181d; }
.nb-gl, .nb-overlay { position: absolute; left: 0; top: 0; }
.nb-overlay { pointer-events: none; }
h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: #666; margin: 14px 0 6px; }
h2:first-child { margin-top: 4px; }
button { font: inherit; border: 1px solid #bbb; background: #fafafa; border-radius: 4px; padding: 3px 8px; cursor: pointer; }
button:hover { background: #eee; }
button.primary { background: #f57c00; border-color: #e65100; color: #fff; }
button.on { background: #ffe0b2; border-color: #f57c00; }
button:disabled { opacity: .5; cursor: default; }
select, input { font: inherit; padding: 2px 4px; border: 1px solid #bbb; border-radius: 3px; }
.muted { color: #777; }
.err { color: #c62828; }
.ok { color: #2e7d32; }
.kv { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; }
.kv b { font-weight: 500; text-align: right; }
.net { border: 1px solid #e0e0e0; border-radius: 5px; padding: 5px 7px; margin: 5px 0; }
.net.unavail { background: #fafafa; color: #888; }
.net .row { display: flex; align-items: center; gap: 6px; justify-content: space-between; }
.net .why { font-size: 11px; color: #a15c00; margin-top: 3px; word-break: break-word; }
.bar { height: 6px; background: #eee; border-radius: 3px; overflow: hidden; margin: 4px 0 2px; }
.bar > div { height: 100%; background: #f57c00; width: 0; transition: width .2s; }
.prog { font-size: 11px; color: #555; }
.opts { display: grid; grid-template-columns: auto 1fr; gap: 3px 8px; align-items: center; }
.opts input { width: 70px; }
.opts input[type=checkbox] { width: auto; justify-self: start; }
.opts select { max-width: 150px; }
.opts label { cursor: help; }
.opts .changed { border-color: #f57c00; background: #fff3e0; }
.opts input.err { border-color: #c62828; background: #ffebee; }
.opts-form { border: 1px solid #e0e0e0; border-radius: 5px; padding: 3px 7px; margin: 4px 0; }
.opts-form > summary { cursor: pointer; font-weight: 500; }
.opts-form[open] > summary { margin-bottom: 4px; }
.opts-form > button { margin: 5px 0 2px; }
table.t { border-collapse: collapse; width: 100%; font-size: 11px; }
table.t th, table.t td { border-bottom: 1px solid #eee; padding: 2px 4px; text-align: right; white-space: nowrap; }
table.t th:first-child, table.t td:first-child { text-align: left; }
table.t tr.click:hover { background: #fff3e0; cursor: pointer; }
table.t tr.cur { background: #ffe0b2; }
.toolbar { position: absolute; left: 8px; top: 8px; right: 8px; display: flex; gap: 6px; flex-wrap: wrap; align-items: center; z-index: 2; }
.toolbar > * { box-shadow: 0 1px 2px rgba(0,0,0,.3); }
.toolbar input[type=search] { width: 180px; }
.toolbar label { color: #ddd; background: rgba(0,0,0,.4); padding: 2px 6px; border-radius: 3px; box-shadow: none; }
.legend { position: absolute; right: 8px; bottom: 8px; max-height: 45%; overflow-y: auto; background: rgba(255,255,255,.92); border-radius: 5px; padding: 5px 8px; font-size: 11px; z-index: 2; min-width: 140px; }
.legend .it { display: flex; align-items: center; gap: 6px; cursor: pointer; }
.legend .it:hover { text-decoration: underline; }
.sw { width: 11px; height: 11px; border-radius: 2px; display: inline-block; flex: none; }
.status { position: absolute; left: 8px; bottom: 8px; color: #ddd; font-size: 12px; background: rgba(0,0,0,.45); padding: 3px 8px; border-radius: 4px; z-index: 2; max-width: 60%; }
.centre-msg { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; color: #ccc; text-align: center; padding: 40px; z-index: 1; pointer-events: none; }
.centre-msg > div { max-width: 520px; pointer-events: auto; background: rgba(0,0,0,.35); padding: 16px 20px; border-radius: 8px; }
.centre-msg input { width: 100%; box-sizing: border-box; margin: 3px 0 8px; }
.tip { position: fixed; pointer-events: none; background: #fff; border-radius: 5px; box-shadow: 0 2px 10px rgba(0,0,0,.4); padding: 6px; z-index: 10; font-size: 11px; max-width: 280px; }
.tip img { display: block; max-width: 256px; max-height: 256px; min-width: 96px; image-rendering: pixelated; margin-bottom: 4px; }
.tabs { display: flex; gap: 2px; margin: 6px 0; flex-wrap: wrap; }
.tabs button { border-radius: 4px 4px 0 0; padding: 3px 6px; font-size: 12px; }
.pane { flex: 1; overflow-y: auto; min-height: 0; }
.labelbar { border: 1px solid #ffcc80; background: #fff8e1; border-radius: 5px; padding: 6px; }
.labelbar .classes { display: flex; flex-wrap: wrap; gap: 4px; margin: 5px 0; }
.labelbar .classes button kbd { font-size: 10px; color: #888; margin-right: 3px; }
.item { display: flex; gap: 6px; padding: 4px; border-bottom: 1px solid #eee; cursor: pointer; align-items: center; }
.item.cur { background: #ffe0b2; }
.item.done { opacity: .55; }
.item img { width: 44px; height: 44px; object-fit: contain; background: #eee; image-rendering: pixelated; flex: none; }
.item .meta { font-size: 11px; overflow: hidden; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; }
.grid img { width: 56px; height: 56px; object-fit: contain; background: #eee; cursor: pointer; image-rendering: pixelated; }
.group { border-bottom: 1px solid #eee; padding: 4px 0; }
.toasts { position: fixed; left: 50%; transform: translateX(-50%); bottom: 16px; z-index: 20; display: flex; flex-direction: column; align-items: center; gap: 4px; pointer-events: none; }
.toast { background: #323232; color: #fff; padding: 6px 14px; border-radius: 4px; font-size: 12px; max-width: 60vw; }
#nb-metrics { overflow-x: auto; }
.hint { font-size: 11px; color: #777; margin-top: 4px; }
.update { font-size: 12px; background: #fff6d6; border: 1px solid #e8d48a; border-radius: 4px; padding: 6px; margin: 6px 0; }
.update button { margin-top: 4px; display: block; }
.next-cur .kind-line { font-weight: 500; }
.next-head { position: sticky; top: 0; z-index: 1; background: #fff; padding-bottom: 2px; }
.next-head .update { margin-top: 0; }
.acc-words { margin-top: 4px; font-weight: 500; color: #1a3e6e; }
.typer { display: flex; gap: 6px; align-items: center; margin: 4px 0; }
.typer input { width: 170px; }
.item .reason, .next-cur .reason { color: #8a4b00; }
.item .kind { font-size: 10px; margin-left: 6px; padding: 0 4px; border-radius: 3px; background: #e3f2fd; color: #0d47a1; }
.item .kind.recheck { background: #fce4ec; color: #880e4f; }
.next-cur { display: flex; gap: 8px; align-items: flex-start; border: 1px solid #ffcc80; border-radius: 5px; padding: 6px; margin: 6px 0; background: #fffdf7; }
.next-cur img { width: 104px; height: 104px; object-fit: contain; background: #eee; flex: none; image-rendering: pixelated; }
.acc { font-size: 12px; }
.acc-plot { display: block; margin-top: 4px; font-size: 10px; fill: #666; }
.acc-plot .grid-line { stroke: #eee; }
.acc-plot .band { fill: #ffe0b2; stroke: none; }
.acc-plot .line { fill: none; stroke-width: 1.6; }
.acc-plot .line.pool, .acc-plot .dot.pool { stroke: #f57c00; }
.acc-plot .line.all, .acc-plot .dot.all { stroke: #1565c0; }
.acc-plot .dot { fill: #fff; stroke-width: 1.6; }
.acc .sw.all { background: #1565c0; } .acc .sw.pool { background: #f57c00; }
.bulk-back { position: fixed; inset: 0; background: rgba(0,0,0,.45); z-index: 30; display: flex; align-items: center; justify-content: center; outline: none; }
.bulk { background: #fff; border-radius: 8px; padding: 12px 16px; width: min(860px, 80vw); max-height: 86vh; display: flex; flex-direction: column; gap: 8px; box-shadow: 0 4px 24px rgba(0,0,0,.5); }
.bulk h3 { margin: 0; font-size: 15px; }
.bulk-grid { overflow-y: auto; min-height: 80px; max-height: 60vh; border: 1px solid #eee; padding: 4px; }
.bulk-grid img { width: 64px; height: 64px; cursor: default; }
.bulk .row { display: flex; gap: 8px; align-items: center; }
`;
