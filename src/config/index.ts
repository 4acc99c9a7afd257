// The config model: parsing and validation of knockgate.yaml, kept apart from policy
// (src/kernel/tables.ts turns a validated model into kernel tables).
export * from './model.js';
export { ConfigError, formatIssue, type ConfigIssue } from './errors.js';
export { parseDuration, parseTimeout, formatDuration, MAX_DURATION_MS } from './duration.js';
export { parseStep, parsePortRange, parsePort, formatStep, formatRange, rangeHolds } from './ports.js';
export { parseSize, formatSize } from './size.js';
export { loadConfigFile, parseConfigText, checkConfigText, type CheckResult } from './load.js';
export {
  setDoorInFile,
  addDoorToFile,
  removeDoorFromFile,
  setDoorInText,
  addDoorToText,
  removeDoorFromText,
  DoorEditError,
  writeFileAtomic,
  type DoorChanges,
  type NewDoor,
  type EditResult,
} from './edit.js';
