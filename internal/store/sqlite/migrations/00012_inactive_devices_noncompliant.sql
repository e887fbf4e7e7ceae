-- A disabled or lost device is noncompliant whatever its last posture
-- said (rule device_status); the device service writes that evaluation
-- with the status change. Devices disabled or lost before get it here.
-- Conventions as in 00001.

-- +goose Up
UPDATE devices SET compliance = 'noncompliant',
    compliance_failures = '[{"rule":"device_status","detail":"the device is marked lost or stolen","fix":"A lost device is not enabled again: delete it (ward device delete) and enrol the device again (ward device enroll --force)."}]'
    WHERE status = 'lost';
UPDATE devices SET compliance = 'noncompliant',
    compliance_failures = '[{"rule":"device_status","detail":"the device is disabled","fix":"An administrator enables the device again (ward device enable) when it may be used; its agent then signs in again."}]'
    WHERE status = 'disabled';

-- +goose Down
-- The previous evaluation is not kept; the next report or sweep of an
-- enabled device evaluates it again.
