export const DEFAULT_CONFIG = '/etc/knockgate/knockgate.yaml';
