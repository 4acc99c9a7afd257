import { runCost, runScale } from './cost.js';
const which = process.argv[2] ?? 'cost';
if (which === 'cost') console.log(JSON.stringify(runCost('scratch1', { repeat: Number(process.argv[3] ?? 100000), runs: 3, samples: Number(process.argv[4] ?? 2000) }), null, 1));
else console.log(JSON.stringify(runScale('scratch2', { repeat: 100000, runs: 3, samples: 1000, sources: Number(process.argv[3] ?? 4096), levels: (process.argv[4] ?? '1,1000').split(',').map(Number) }), null, 1));
