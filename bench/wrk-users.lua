-- Each request carries a random x-user (1..100000), so hash balancers have keys to spread.
request = function()
  return wrk.format(nil, nil, { ["x-user"] = tostring(math.random(1, 100000)) })
end
